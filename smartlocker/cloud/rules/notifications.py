"""What people and operators' systems are told when parcels, alerts and cabinets change.

Called by the rules inside the transaction of the change itself, so a message
exists exactly when its cause does (the outbox in :mod:`smartlocker.cloud.notify`).
Recipients get a message on their own channel and language (``parcels.notify_channel``,
``parcels.locale``); couriers get one when an expired parcel awaits them; operators'
webhook subscriptions get every event of their site.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from smartlocker.cloud.notify import NotificationKind, enqueue_event, enqueue_notification
from smartlocker.cloud.notify.outbox import RECIPIENT_CHANNELS

from ..errors import NotFound, ValidationFailed
from .lifecycle import ParcelState, Transition

__all__ = [
    "EVENT_TYPES",
    "Preferences",
    "notify_alert",
    "notify_code",
    "notify_presence",
    "notify_reservation",
    "notify_transition",
    "send_reminders",
    "set_preferences",
    "subscribe_webhook",
    "unsubscribe_webhook",
]

logger = logging.getLogger(__name__)

#: Every event type an operator webhook can subscribe to.
EVENT_TYPES = (
    "parcel.reserved",
    "parcel.deposited",
    "parcel.picked_up",
    "parcel.expired",
    "parcel.returned",
    "parcel.cancelled",
    "alert.raised",
    "alert.cleared",
    "cabinet.online",
    "cabinet.offline",
)

_LOCALE_RE = re.compile(r"^[a-z]{2}(-[A-Z]{2})?$")


@dataclass(frozen=True, slots=True)
class Preferences:
    """How a parcel's recipient (and its courier) want to be told."""

    channel: str = "log"
    locale: str = "en"
    courier_contact: str | None = None
    courier_channel: str = "log"

    def __post_init__(self) -> None:
        for channel in (self.channel, self.courier_channel):
            if channel not in RECIPIENT_CHANNELS:
                raise ValidationFailed(
                    f"channel must be one of {', '.join(RECIPIENT_CHANNELS)}, not {channel!r}"
                )
        if not _LOCALE_RE.fullmatch(self.locale):
            raise ValidationFailed(f"locale must look like 'en' or 'de-AT', not {self.locale!r}")


def set_preferences(
    conn: psycopg.Connection[Any],
    parcel: str,
    *,
    recipient: str | None = None,
    channel: str | None = None,
    locale: str | None = None,
) -> None:
    """Change where and how the recipient is told (later messages follow it)."""
    if channel is not None:
        Preferences(channel=channel)
    if locale is not None:
        Preferences(locale=locale)
    row = conn.execute(
        "UPDATE parcels SET recipient = coalesce(%s, recipient),"
        " notify_channel = coalesce(%s, notify_channel), locale = coalesce(%s, locale)"
        " WHERE id = %s RETURNING id",
        (recipient, channel, locale, parcel),
    ).fetchone()
    if row is None:
        raise NotFound(f"no parcel {parcel}", parcel=parcel)


#: Transitions that tell the recipient something (the pickup code goes with its issue).
_RECIPIENT = {
    ParcelState.PICKED_UP: NotificationKind.PICKED_UP,
    ParcelState.EXPIRED: NotificationKind.EXPIRED,
    ParcelState.RETURNED: NotificationKind.RETURNED,
}


_PARCEL = (
    "SELECT id, site, cabinet, compartment, state, reference, recipient, notify_channel,"
    " locale, courier_contact, courier_channel, deadline, direction FROM parcels"
)


def _parcel(conn: psycopg.Connection[Any], parcel: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_PARCEL + " WHERE id = %s", (parcel,)).fetchone()
    if row is None:
        raise NotFound(f"no parcel {parcel}", parcel=parcel)
    return row


def _tell(
    conn: psycopg.Connection[Any],
    row: dict[str, Any],
    kind: NotificationKind,
    *,
    courier: bool = False,
    code: str | None = None,
    dedupe_key: str | None = None,
) -> int | None:
    """Queue ``kind`` for the parcel's recipient (or its courier), on their own channel."""
    if courier:
        to, channel = row["courier_contact"], row["courier_channel"]
    else:
        to, channel = row["recipient"], row["notify_channel"]
    if not to:
        return None
    return enqueue_notification(
        conn,
        kind=kind,
        channel=channel,
        destination=to,
        values=_values(row),
        locale=row["locale"],
        site=row["site"],
        parcel=row["id"],
        code=code,
        dedupe_key=dedupe_key,
    )


def _values(row: dict[str, Any]) -> dict[str, Any]:
    deadline: datetime | None = row["deadline"]
    return {
        "reference": row["reference"] or row["id"],
        "cabinet": row["cabinet"],
        "compartment": row["compartment"],
        "deadline": deadline.strftime("%Y-%m-%d %H:%M UTC") if deadline else "-",
    }


def _event_data(row: dict[str, Any]) -> dict[str, Any]:
    deadline: datetime | None = row["deadline"]
    return {
        "parcel": row["id"],
        "reference": row["reference"],
        "state": row["state"],
        "cabinet": row["cabinet"],
        "compartment": row["compartment"],
        "direction": row["direction"],
        "deadline": deadline.isoformat() if deadline else None,
    }


def notify_reservation(conn: psycopg.Connection[Any], parcel: str) -> None:
    """A compartment was reserved: operators' systems hear of it."""
    row = _parcel(conn, parcel)
    enqueue_event(
        conn,
        site=row["site"],
        event_type="parcel.reserved",
        data=_event_data(row),
        dedupe_key=f"parcel.reserved:{parcel}",
    )


def notify_code(conn: psycopg.Connection[Any], parcel: str, code: str) -> int | None:
    """The recipient's new pickup code: the one message that carries a clear code."""
    row = _parcel(conn, parcel)
    if not row["recipient"]:
        logger.info("parcel %s has no recipient contact: its pickup code is not sent", parcel)
        return None
    return _tell(conn, row, NotificationKind.CODE_ISSUED, code=code)


def notify_transition(conn: psycopg.Connection[Any], transition: Transition) -> None:
    """A lifecycle transition: the site's webhooks, the recipient, and on expiry the courier."""
    row = _parcel(conn, transition.parcel)
    state = transition.to_state
    event_type = f"parcel.{state.value}"
    enqueue_event(
        conn,
        site=row["site"],
        event_type=event_type,
        data=_event_data(row),
        dedupe_key=f"{event_type}:{transition.parcel}",
    )
    kind = _RECIPIENT.get(state)
    if kind is not None:
        _tell(conn, row, kind, dedupe_key=f"{kind.value}:{transition.parcel}")
    if state is ParcelState.EXPIRED:
        _tell(
            conn,
            row,
            NotificationKind.COURIER_COLLECT,
            courier=True,
            dedupe_key=f"courier_collect:{transition.parcel}",
        )


def send_reminders(conn: psycopg.Connection[Any], now: datetime) -> int:
    """Remind recipients whose deadline is near: within a quarter of the holding time,
    at most 24 hours before. Once per deadline (an extension earns a new reminder)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            _PARCEL + " WHERE state = 'deposited' AND recipient IS NOT NULL"
            " AND deadline > %(now)s"
            " AND deadline - %(now)s <= least(interval '24 hours', (deadline - deposited_at) / 4)",
            {"now": now},
        ).fetchall()
    sent = 0
    for row in rows:
        deadline: datetime = row["deadline"]
        key = f"reminder:{row['id']}:{deadline.isoformat()}"
        sent += _tell(conn, row, NotificationKind.REMINDER, dedupe_key=key) is not None
    return sent


def _site_of(conn: psycopg.Connection[Any], cabinet: str) -> str | None:
    row = conn.execute("SELECT site FROM cabinets WHERE id = %s", (cabinet,)).fetchone()
    return None if row is None else str(row[0])


def notify_alert(
    conn: psycopg.Connection[Any],
    alert: int,
    *,
    raised: bool,
    cabinet: str,
    kind: str,
    compartment: str | None,
    at: datetime,
) -> None:
    """An alert raised or cleared: the site's webhooks hear of it."""
    site = _site_of(conn, cabinet)
    if site is None:
        return
    event_type = "alert.raised" if raised else "alert.cleared"
    enqueue_event(
        conn,
        site=site,
        event_type=event_type,
        data={
            "alert": alert,
            "cabinet": cabinet,
            "compartment": compartment,
            "kind": kind,
            "at": at.isoformat(),
        },
        dedupe_key=f"{event_type}:{alert}",
    )


def notify_presence(
    conn: psycopg.Connection[Any], cabinet: str, *, online: bool, at: datetime
) -> None:
    """A cabinet went offline, or came back: the site's webhooks hear of it."""
    site = _site_of(conn, cabinet)
    if site is None:
        return
    event_type = "cabinet.online" if online else "cabinet.offline"
    enqueue_event(
        conn, site=site, event_type=event_type, data={"cabinet": cabinet, "at": at.isoformat()}
    )


def subscribe_webhook(
    conn: psycopg.Connection[Any], site: str, url: str, event_types: list[str]
) -> tuple[int, str]:
    """A new operator webhook of ``site``; returns its id and its secret (shown once)."""
    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown:
        raise ValidationFailed(
            f"unknown event types {unknown}; known: {', '.join(EVENT_TYPES)}", unknown=unknown
        )
    if not url.startswith(("http://", "https://")):
        raise ValidationFailed("a webhook URL is http:// or https://")
    secret = "whsec_" + secrets.token_urlsafe(32)
    row = conn.execute(
        "INSERT INTO webhook_subscriptions (site, url, secret, event_types)"
        " VALUES (%s, %s, %s, %s) RETURNING id",
        (site, url, secret, sorted(set(event_types))),
    ).fetchone()
    assert row is not None
    return int(row[0]), secret


def unsubscribe_webhook(conn: psycopg.Connection[Any], subscription: int) -> None:
    """Stop deliveries (the subscription stays, inactive, for the delivery log)."""
    row = conn.execute(
        "UPDATE webhook_subscriptions SET active = false WHERE id = %s RETURNING id",
        (subscription,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no webhook {subscription}", webhook=subscription)
