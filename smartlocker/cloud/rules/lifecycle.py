"""The parcel lifecycle: the one table of allowed transitions, and ``apply``.

``reserved → deposited → picked_up``; ``deposited → expired → returned``;
``reserved → cancelled`` (CONTRACT.md). Sending from a locker is the same
lifecycle with ``direction = 'outbound'``: the customer deposits, the courier
picks up. :func:`apply_transition` is the only code that changes a parcel's
state: it checks :data:`TRANSITIONS`, keeps the compartment's occupancy in step,
revokes codes that the new state ends, and writes a history row saying who or
what caused it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ..errors import InvalidTransition, NotFound

__all__ = [
    "ACTIVE_STATES",
    "TRANSITIONS",
    "ParcelState",
    "Transition",
    "apply_transition",
    "is_allowed",
    "lock_parcel",
    "occupancy_of",
]

logger = logging.getLogger(__name__)


class ParcelState(StrEnum):
    RESERVED = "reserved"
    DEPOSITED = "deposited"
    PICKED_UP = "picked_up"
    EXPIRED = "expired"
    RETURNED = "returned"
    CANCELLED = "cancelled"


S = ParcelState

#: The only place that says which transition is allowed.
TRANSITIONS: frozenset[tuple[ParcelState, ParcelState]] = frozenset(
    {
        (S.RESERVED, S.DEPOSITED),
        (S.RESERVED, S.CANCELLED),
        (S.DEPOSITED, S.PICKED_UP),
        (S.DEPOSITED, S.EXPIRED),
        (S.EXPIRED, S.RETURNED),
    }
)

#: States in which the parcel holds its compartment.
ACTIVE_STATES: frozenset[ParcelState] = frozenset({S.RESERVED, S.DEPOSITED, S.EXPIRED})

_OCCUPANCY = {S.RESERVED: "reserved", S.DEPOSITED: "occupied", S.EXPIRED: "occupied"}
#: The timestamp column each target state sets.
_STAMP = {
    S.DEPOSITED: "deposited_at",
    S.PICKED_UP: "picked_up_at",
    S.EXPIRED: "expired_at",
    S.RETURNED: "closed_at",
    S.CANCELLED: "closed_at",
}
#: Codes that stop being valid when the parcel enters a state.
_REVOKE = {
    S.DEPOSITED: ("deposit",),
    S.PICKED_UP: ("pickup",),
    S.EXPIRED: ("pickup",),
    S.RETURNED: ("pickup", "deposit"),
    S.CANCELLED: ("deposit",),
}


def is_allowed(from_state: ParcelState | str, to_state: ParcelState | str) -> bool:
    return (ParcelState(from_state), ParcelState(to_state)) in TRANSITIONS


def occupancy_of(state: ParcelState | str) -> str:
    """The compartment's occupancy while its parcel is in ``state``."""
    return _OCCUPANCY.get(ParcelState(state), "free")


@dataclass(frozen=True, slots=True)
class Transition:
    parcel: str
    cabinet: str
    compartment: str
    from_state: ParcelState
    to_state: ParcelState
    at: datetime


def lock_parcel(conn: psycopg.Connection[Any], parcel: str) -> tuple[ParcelState, str, str]:
    """Lock the parcel's compartment, then the parcel; returns (state, cabinet, compartment).

    The lock order of the rules is cabinet → compartment → parcel → codes: ingest
    holds compartment rows (door events) for its whole batch, so anything that
    changes a parcel takes the compartment first, or the two could deadlock.
    """
    where = conn.execute(
        "SELECT cabinet, compartment FROM parcels WHERE id = %s", (parcel,)
    ).fetchone()
    if where is None:
        raise NotFound(f"no parcel {parcel}", parcel=parcel)
    conn.execute(
        "SELECT 1 FROM compartments WHERE cabinet = %s AND id = %s FOR NO KEY UPDATE",
        (where[0], where[1]),
    )
    row = conn.execute(
        "SELECT state FROM parcels WHERE id = %s FOR NO KEY UPDATE", (parcel,)
    ).fetchone()
    assert row is not None  # parcels are never deleted while their compartment exists
    return ParcelState(row[0]), str(where[0]), str(where[1])


def apply_transition(
    conn: psycopg.Connection[Any],
    parcel: str,
    to_state: ParcelState | str,
    *,
    now: datetime,
    actor: str,
    cause: str | None = None,
    detail: dict[str, Any] | None = None,
    expect: ParcelState | str | None = None,
) -> Transition:
    """Move ``parcel`` to ``to_state`` in the caller's transaction.

    Raises :class:`NotFound` or :class:`InvalidTransition` (also when ``expect``
    is given and the parcel is in another state). Codes the new state ends are
    marked used (pickup → picked_up, deposit → deposited) or revoked.
    """
    target = ParcelState(to_state)
    with conn.transaction():
        current, cabinet, compartment = lock_parcel(conn, parcel)
        if (expect is not None and current != ParcelState(expect)) or not is_allowed(
            current, target
        ):
            raise InvalidTransition(parcel, current.value, target.value)
        stamp = _STAMP[target]
        conn.execute(
            f"UPDATE parcels SET state = %s, {stamp} = %s WHERE id = %s",  # noqa: S608
            (target.value, now, parcel),
        )
        conn.execute(
            "UPDATE compartments SET occupancy = %s WHERE cabinet = %s AND id = %s",
            (occupancy_of(target), cabinet, compartment),
        )
        used = {S.DEPOSITED: "deposit", S.PICKED_UP: "pickup"}.get(target)
        for kind in _REVOKE.get(target, ()):
            if kind == used:
                conn.execute(
                    "UPDATE codes SET used_at = %s WHERE parcel = %s AND kind = %s"
                    " AND used_at IS NULL AND revoked_at IS NULL",
                    (now, parcel, kind),
                )
            else:
                conn.execute(
                    "UPDATE codes SET revoked_at = %s, revoked_reason = %s WHERE parcel = %s"
                    " AND kind = %s AND used_at IS NULL AND revoked_at IS NULL",
                    (now, target.value, parcel, kind),
                )
        conn.execute(
            "INSERT INTO parcel_history (parcel, at, from_state, to_state, actor, cause, detail)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                parcel,
                now,
                current.value,
                target.value,
                actor,
                cause,
                Jsonb(detail) if detail else None,
            ),
        )
        transition = Transition(parcel, cabinet, compartment, current, target, now)
        # Who must hear of it, queued in this same transaction (imported here: that
        # module builds on this one's types).
        from .notifications import notify_transition

        notify_transition(conn, transition)
    logger.info("parcel %s: %s → %s (%s)", parcel, current.value, target.value, actor)
    return transition
