"""The outbound-message outbox: enqueue inside the caller's transaction, claim, settle.

Enqueue functions take the caller's connection and never commit: the message
exists exactly when the state change that caused it does.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .channels import Outbound
from .templates import NotificationKind

__all__ = [
    "RetryPolicy",
    "claim_due",
    "enqueue_event",
    "enqueue_notification",
    "list_messages",
    "mark_failed",
    "mark_sent",
]

RECIPIENT_CHANNELS = ("email", "sms", "push", "log")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, then the dead-letter state."""

    first_delay_s: float = 5.0
    max_delay_s: float = 3600.0
    max_attempts: int = 10
    jitter: float = 0.2

    def delay(self, attempts: int) -> timedelta:
        base = min(self.first_delay_s * 2 ** max(attempts - 1, 0), self.max_delay_s)
        spread = base * self.jitter
        return timedelta(seconds=base + random.uniform(-spread, spread))


def enqueue_notification(
    conn: psycopg.Connection[Any],
    *,
    kind: NotificationKind,
    channel: str,
    destination: str,
    values: Mapping[str, Any],
    locale: str = "en",
    site: str | None = None,
    parcel: str | None = None,
    code: str | None = None,
    dedupe_key: str | None = None,
) -> int | None:
    """Queue a message to a recipient or courier; ``None`` if ``dedupe_key`` was queued."""
    if channel not in RECIPIENT_CHANNELS:
        raise ValueError(f"unknown notification channel: {channel!r}")
    row = conn.execute(
        "INSERT INTO outbound_messages (channel, topic, destination, site, parcel, locale,"
        " payload, secret_payload, dedupe_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        (
            channel,
            kind.value,
            destination,
            site,
            parcel,
            locale,
            Jsonb(dict(values)),
            Jsonb({"code": code}) if code is not None else None,
            dedupe_key,
        ),
    ).fetchone()
    return None if row is None else int(row[0])


def enqueue_event(
    conn: psycopg.Connection[Any],
    *,
    site: str,
    event_type: str,
    data: Mapping[str, Any],
    dedupe_key: str | None = None,
) -> list[int]:
    """Queue one webhook delivery per active subscription of ``site`` to ``event_type``."""
    rows = conn.execute(
        "INSERT INTO outbound_messages (channel, topic, destination, site, subscription_id,"
        " payload, dedupe_key)"
        " SELECT 'webhook', %(type)s, s.url, s.site, s.id, %(data)s,"
        "        CASE WHEN %(key)s::text IS NULL THEN NULL ELSE %(key)s || ':' || s.id END"
        " FROM webhook_subscriptions s"
        " WHERE s.active AND s.site = %(site)s AND %(type)s = ANY (s.event_types)"
        " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        {"type": event_type, "data": Jsonb(dict(data)), "key": dedupe_key, "site": site},
    ).fetchall()
    return [int(r[0]) for r in rows]


def claim_due(
    conn: psycopg.Connection[Any], now: datetime, *, lease_s: float = 60.0, limit: int = 20
) -> list[Outbound]:
    """Lease due messages to this worker (committed by the caller before sending).

    A worker that dies mid-send leaves its lease to run out; then another
    worker sends the message again (at-least-once, see docs/notifications.md).
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "UPDATE outbound_messages m"
            " SET lease_until = %(now)s + make_interval(secs => %(lease)s),"
            "     attempts = m.attempts + 1"
            " FROM (SELECT id FROM outbound_messages"
            "       WHERE status = 'pending' AND next_attempt_at <= %(now)s"
            "         AND (lease_until IS NULL OR lease_until <= %(now)s)"
            "       ORDER BY next_attempt_at, id LIMIT %(limit)s"
            "       FOR UPDATE SKIP LOCKED) due"
            " WHERE m.id = due.id"
            " RETURNING m.*,"
            "   (SELECT secret FROM webhook_subscriptions s WHERE s.id = m.subscription_id)"
            "   AS subscription_secret",
            {"now": now, "lease": lease_s, "limit": limit},
        )
        rows = cur.fetchall()
    rows.sort(key=lambda r: int(r["id"]))
    return [
        Outbound(
            id=int(r["id"]),
            channel=r["channel"],
            topic=r["topic"],
            destination=r["destination"],
            locale=r["locale"],
            site=r["site"],
            parcel=r["parcel"],
            payload=r["payload"],
            secret_payload=r["secret_payload"],
            attempt=int(r["attempts"]),
            created_at=r["created_at"].isoformat(),
            subscription_secret=r["subscription_secret"],
        )
        for r in rows
    ]


def mark_sent(
    conn: psycopg.Connection[Any], message_id: int, now: datetime, status: int | None
) -> None:
    """Delivered: record it, and erase any clear code the message carried."""
    conn.execute(
        "UPDATE outbound_messages SET status = 'sent', sent_at = %s, response_status = %s,"
        " secret_payload = NULL, lease_until = NULL, last_error = NULL WHERE id = %s",
        (now, status, message_id),
    )


def mark_failed(
    conn: psycopg.Connection[Any],
    message: Outbound,
    now: datetime,
    reason: str,
    *,
    permanent: bool,
    policy: RetryPolicy,
    status: int | None = None,
) -> str:
    """Schedule a retry, or move to ``dead`` (code erased); returns the new status."""
    dead = permanent or message.attempt >= policy.max_attempts
    if dead:
        conn.execute(
            "UPDATE outbound_messages SET status = 'dead', last_error = %s,"
            " response_status = %s, secret_payload = NULL, lease_until = NULL WHERE id = %s",
            (reason, status, message.id),
        )
        return "dead"
    conn.execute(
        "UPDATE outbound_messages SET next_attempt_at = %s, last_error = %s,"
        " response_status = %s, lease_until = NULL WHERE id = %s",
        (now + policy.delay(message.attempt), reason, status, message.id),
    )
    return "pending"


def list_messages(
    conn: psycopg.Connection[Any],
    *,
    status: str | None = None,
    sites: Sequence[str] | None = None,
    parcel: str | None = None,
    after_id: int = 0,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The delivery log (no clear codes), newest last, for the API."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, created_at, channel, topic, destination, site, parcel, locale, status,"
            " attempts, next_attempt_at, last_error, response_status, sent_at"
            " FROM outbound_messages"
            " WHERE id > %(after)s"
            "   AND (%(status)s::text IS NULL OR status = %(status)s)"
            "   AND (%(parcel)s::text IS NULL OR parcel = %(parcel)s)"
            "   AND (%(sites)s::text[] IS NULL OR site = ANY (%(sites)s))"
            " ORDER BY id LIMIT %(limit)s",
            {"after": after_id, "status": status, "parcel": parcel, "sites": sites, "limit": limit},
        )
        return cur.fetchall()
