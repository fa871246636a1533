"""Parcel operations: what the API and the reactions call, built from the rules.

Each function works in the caller's transaction and takes ``now``. State changes
go through :func:`~.lifecycle.apply_transition` only. Codes: a reservation's
deposit code is returned to the caller once (the courier, or the customer who
sends a parcel); a pickup code issued at deposit goes to the recipient through
the outbound-message outbox (:mod:`.notifications`), the only place a clear code
exists until it is delivered (the worker erases it then).
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from ..errors import Conflict, ValidationFailed
from ..keys import CloudKeys
from .alerts import AlertKind, raise_alert
from .allocation import allocate
from .codes import issue_code, revoke_codes
from .commands import CommandRow, create_command
from .fees import compute_fee, load_fee_policy
from .fleet import audit
from .lifecycle import ParcelState, Transition, apply_transition, lock_parcel, occupancy_of
from .notifications import Preferences, notify_code, notify_reservation
from .openings import OPENING_TARGETS, parcel_opening

__all__ = [
    "Deposit",
    "Reservation",
    "cancel_parcel",
    "expire_overdue",
    "extend_deadline",
    "record_deposit",
    "record_late_pickup",
    "record_pickup",
    "record_return",
    "request_opening",
    "resend_pickup_code",
    "reserve_parcel",
]

logger = logging.getLogger(__name__)

DIRECTIONS = ("inbound", "outbound")
_PARCEL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class Reservation:
    parcel: str
    site: str
    cabinet: str
    compartment: str
    size: str
    #: The clear deposit code, returned once; only its hash is stored.
    deposit_code: str
    deposit_code_valid_until: datetime


@dataclass(frozen=True, slots=True)
class Deposit:
    transition: Transition
    deadline: datetime
    #: The outbox row carrying the pickup code (None: the parcel has no recipient).
    notification: int | None


def reserve_parcel(
    conn: psycopg.Connection[Any],
    keys: CloudKeys,
    *,
    size: str,
    actor: str,
    now: datetime,
    site: str | None = None,
    cabinet: str | None = None,
    temperature: bool = False,
    direction: str = "inbound",
    recipient: str | None = None,
    reference: str | None = None,
    deadline: datetime | None = None,
    parcel: str | None = None,
    preferences: Preferences | None = None,
) -> Reservation:
    """Allocate a compartment and reserve it; raises ``NoCompartmentAvailable``."""
    if direction not in DIRECTIONS:
        raise ValidationFailed(f"direction must be inbound or outbound, not {direction!r}")
    if deadline is not None and deadline <= now:
        raise ValidationFailed("the deadline is in the past", deadline=deadline.isoformat())
    if parcel is not None and not _PARCEL_ID.fullmatch(parcel):
        raise ValidationFailed(f"bad parcel id {parcel!r} ([A-Za-z0-9_-]{{1,64}})")
    parcel = parcel or uuid.uuid4().hex
    prefs = preferences or Preferences()
    if conn.execute("SELECT 1 FROM parcels WHERE id = %s", (parcel,)).fetchone() is not None:
        raise Conflict(f"parcel {parcel} exists", parcel=parcel)
    with conn.transaction():
        spot = allocate(conn, size=size, site=site, cabinet=cabinet, temperature=temperature)
        hours_row = conn.execute(
            "SELECT reservation_hours FROM sites WHERE id = %s", (spot.site,)
        ).fetchone()
        assert hours_row is not None
        conn.execute(
            "INSERT INTO parcels (id, site, cabinet, compartment, direction, size,"
            " needs_temperature, state, reference, recipient, deadline, reserved_at, created_by,"
            " notify_channel, locale, courier_contact, courier_channel)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, 'reserved', %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                parcel,
                spot.site,
                spot.cabinet,
                spot.compartment,
                direction,
                size,
                temperature,
                reference,
                recipient,
                deadline,
                now,
                actor,
                prefs.channel,
                prefs.locale,
                prefs.courier_contact,
                prefs.courier_channel,
            ),
        )
        conn.execute(
            "UPDATE compartments SET occupancy = %s WHERE cabinet = %s AND id = %s",
            (occupancy_of(ParcelState.RESERVED), spot.cabinet, spot.compartment),
        )
        conn.execute(
            "INSERT INTO parcel_history (parcel, at, from_state, to_state, actor, cause)"
            " VALUES (%s, %s, NULL, 'reserved', %s, 'reservation')",
            (parcel, now, actor),
        )
        valid_until = now + timedelta(hours=hours_row[0])
        if deadline is not None:
            valid_until = min(valid_until, deadline)
        code = issue_code(conn, keys, parcel, "deposit", valid_until=valid_until, now=now)
        notify_reservation(conn, parcel)
    logger.info("parcel %s reserved in %s/%s", parcel, spot.cabinet, spot.compartment)
    return Reservation(
        parcel, spot.site, spot.cabinet, spot.compartment, spot.size, code, valid_until
    )


def record_deposit(
    conn: psycopg.Connection[Any],
    keys: CloudKeys,
    parcel: str,
    *,
    now: datetime,
    actor: str,
    cause: str | None = None,
) -> Deposit:
    """reserved → deposited; sets the deadline, issues the pickup code into the outbox."""
    with conn.transaction():
        transition = apply_transition(
            conn, parcel, ParcelState.DEPOSITED, now=now, actor=actor, cause=cause
        )
        row = conn.execute(
            "SELECT p.deadline, s.hold_hours, p.recipient FROM parcels p"
            " JOIN sites s ON s.id = p.site WHERE p.id = %s",
            (parcel,),
        ).fetchone()
        assert row is not None
        deadline: datetime = (
            row[0] if row[0] is not None and row[0] > now else now + timedelta(hours=row[1])
        )
        conn.execute("UPDATE parcels SET deadline = %s WHERE id = %s", (deadline, parcel))
        code = issue_code(conn, keys, parcel, "pickup", valid_until=deadline, now=now)
        note = notify_code(conn, parcel, code)
    return Deposit(transition, deadline, note)


def record_pickup(
    conn: psycopg.Connection[Any],
    parcel: str,
    *,
    now: datetime,
    actor: str,
    cause: str | None = None,
) -> Transition:
    """deposited → picked_up; frees the compartment, uses the code, records the fee."""
    return _end_stay(conn, parcel, ParcelState.PICKED_UP, now=now, actor=actor, cause=cause)


def record_return(
    conn: psycopg.Connection[Any],
    parcel: str,
    *,
    now: datetime,
    actor: str,
    cause: str | None = None,
) -> Transition:
    """expired → returned (taken back by the courier); frees the compartment."""
    return _end_stay(conn, parcel, ParcelState.RETURNED, now=now, actor=actor, cause=cause)


def record_late_pickup(
    conn: psycopg.Connection[Any],
    parcel: str,
    *,
    at: datetime,
    now: datetime,
    actor: str,
    cause: str | None = None,
) -> int | None:
    """A pickup whose events arrive after the deadline sweep expired the parcel.

    The cabinet let the recipient in with their code (valid by its clock, or not yet
    revoked there: the cabinet was offline), so the compartment is most likely
    empty; but the contract has no ``expired → picked_up``, and ``returned`` means
    the courier took it back. The parcel stays ``expired``; the pickup goes into the
    audit log and a ``fault`` alert on the compartment asks an operator to look and
    then return the parcel (which frees the compartment). Returns the alert id if
    newly raised, None if the parcel is not expired (nothing to say).
    """
    with conn.transaction():
        state, cabinet, compartment = lock_parcel(conn, parcel)
        if state is not ParcelState.EXPIRED:
            return None
        audit(
            conn,
            actor=actor,
            action="parcel.pickup_after_expiry",
            target_kind="parcel",
            target=parcel,
            now=now,
            detail={"picked_up_at": at.isoformat(), "cause": cause},
        )
        alert, new = raise_alert(
            conn,
            cabinet,
            AlertKind.FAULT,
            now=now,
            compartment=compartment,
            detail=(
                f"parcel {parcel} picked up with its code at {at.isoformat(timespec='seconds')}"
                " after it had expired: check the compartment, then return the parcel"
            ),
        )
    logger.warning("parcel %s picked up after it expired (%s/%s)", parcel, cabinet, compartment)
    return alert if new else None


def _end_stay(
    conn: psycopg.Connection[Any],
    parcel: str,
    state: ParcelState,
    *,
    now: datetime,
    actor: str,
    cause: str | None,
) -> Transition:
    """The parcel leaves its compartment: the transition and the storage fee, together."""
    with conn.transaction():
        transition = apply_transition(conn, parcel, state, now=now, actor=actor, cause=cause)
        _record_fee(conn, parcel, now)
    return transition


def cancel_parcel(
    conn: psycopg.Connection[Any], parcel: str, *, now: datetime, actor: str
) -> Transition:
    """reserved → cancelled; frees the compartment and revokes the deposit code."""
    return apply_transition(
        conn, parcel, ParcelState.CANCELLED, now=now, actor=actor, cause="cancel"
    )


def expire_overdue(conn: psycopg.Connection[Any], now: datetime) -> list[Transition]:
    """Every deposited parcel past its deadline → expired (pickup code revoked)."""
    done: list[Transition] = []
    candidates = conn.execute(
        "SELECT id FROM parcels WHERE state = 'deposited' AND deadline <= %s ORDER BY deadline",
        (now,),
    ).fetchall()
    for (parcel,) in candidates:
        with conn.transaction():
            state, _, _ = lock_parcel(conn, parcel)  # compartment → parcel, then re-check
            still = conn.execute(
                "SELECT 1 FROM parcels WHERE id = %s AND state = 'deposited' AND deadline <= %s",
                (parcel, now),
            ).fetchone()
            if state is not ParcelState.DEPOSITED or still is None:
                continue  # picked up or extended meanwhile
            done.append(
                apply_transition(
                    conn, parcel, ParcelState.EXPIRED, now=now, actor="system", cause="deadline"
                )
            )
    return done


def extend_deadline(
    conn: psycopg.Connection[Any], parcel: str, deadline: datetime, *, now: datetime, actor: str
) -> None:
    """A later pickup deadline for a reserved or deposited parcel (codes follow)."""
    if deadline <= now:
        raise ValidationFailed("the new deadline is in the past")
    with conn.transaction():
        state = lock_parcel(conn, parcel)[0]
        if state not in (ParcelState.RESERVED, ParcelState.DEPOSITED):
            raise ValidationFailed(f"a {state.value} parcel has no deadline to extend")
        conn.execute("UPDATE parcels SET deadline = %s WHERE id = %s", (deadline, parcel))
        conn.execute(
            "UPDATE codes SET valid_until = %s WHERE parcel = %s AND kind = 'pickup'"
            " AND used_at IS NULL AND revoked_at IS NULL",
            (deadline, parcel),
        )
        # Not a transition: parcel_history holds transitions only; this is an operator action.
        audit(
            conn,
            actor=actor,
            action="parcel.extend",
            target_kind="parcel",
            target=parcel,
            now=now,
            detail={"deadline": deadline.isoformat()},
        )


def resend_pickup_code(
    conn: psycopg.Connection[Any], keys: CloudKeys, parcel: str, *, now: datetime, actor: str
) -> int | None:
    """A fresh pickup code (the old one is revoked) into the outbox; returns its row id
    (None when the parcel has no recipient contact to send it to)."""
    with conn.transaction():
        lock_parcel(conn, parcel)
        row = conn.execute(
            "SELECT state, deadline, recipient FROM parcels WHERE id = %s", (parcel,)
        ).fetchone()
        assert row is not None
        if row[0] != "deposited":
            raise ValidationFailed(f"a {row[0]} parcel has no pickup code")
        code = issue_code(conn, keys, parcel, "pickup", valid_until=row[1], now=now)
        logger.info("pickup code of %s re-issued by %s", parcel, actor)
        return notify_code(conn, parcel, code)


def request_opening(
    conn: psycopg.Connection[Any],
    parcel: str,
    purpose: str,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
) -> CommandRow:
    """An unlock command for a parcel's compartment (API: deposit, app pickup, return).

    Refuses (:class:`InvalidTransition`) when the parcel is not in the state the
    purpose needs; the parcel moves later, when the cabinet reports the door
    opened and closed. Send it with :func:`smartlocker.cloud.downlink.send_command`.
    """
    if purpose not in OPENING_TARGETS:
        raise ValidationFailed(f"purpose must be one of {', '.join(OPENING_TARGETS)}")
    cabinet, compartment = parcel_opening(conn, parcel, purpose)
    return create_command(
        conn,
        cabinet,
        compartment,
        reason=reason or purpose,
        actor=actor,
        now=now,
        parcel=parcel,
        purpose=purpose,
    )


def revoke_parcel_codes(
    conn: psycopg.Connection[Any], parcel: str, *, now: datetime, reason: str
) -> int:
    return revoke_codes(conn, parcel, now=now, reason=reason)


def _record_fee(conn: psycopg.Connection[Any], parcel: str, now: datetime) -> None:
    row = conn.execute("SELECT site, deposited_at FROM parcels WHERE id = %s", (parcel,)).fetchone()
    if row is None or row[1] is None:
        return
    policy = load_fee_policy(conn, row[0])
    fee = compute_fee(policy, row[1], now)
    conn.execute(
        "UPDATE parcels SET fee = %s, fee_currency = %s WHERE id = %s",
        (fee, policy.currency, parcel),
    )
