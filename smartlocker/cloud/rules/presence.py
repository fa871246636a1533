"""Presence: online/offline from birth, last will, traffic and silence.

Anti-flap: a cabinet goes offline only on its last will or when the caller
(ingest, which owns the timing) reports silence; any message marks it seen and,
if it was offline, online again. Times are receipt times (``now``), never
the cabinet's ``ts``: a last will carries the time it was configured, at connect,
which is older than the birth that follows it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import psycopg

from .alerts import AlertKind, clear_alert, raise_alert
from .clock import CORRECTION_S, correction_of
from .notifications import notify_presence

__all__ = ["mark_offline", "mark_online", "touch", "touch_corrected", "touch_nowait"]

logger = logging.getLogger(__name__)


def touch(conn: psycopg.Connection[Any], cabinet: str, *, now: datetime) -> bool:
    """Traffic from ``cabinet`` received ``now``; brings it online. Returns whether it exists.

    Receipt time, not the message's ``ts``: an old event replayed from the
    cabinet's outbox still proves the cabinet is connected now.
    """
    row = conn.execute(
        "UPDATE cabinets SET last_seen = greatest(last_seen, %s) WHERE id = %s RETURNING online",
        (now, cabinet),
    ).fetchone()
    if row is None:
        return False
    if not row[0]:
        mark_online(conn, cabinet, at=now, now=now)
    return True


def touch_corrected(
    conn: psycopg.Connection[Any], cabinet: str, *, now: datetime
) -> timedelta | None:
    """:func:`touch`, and the cabinet's clock correction (:func:`.clock.clock_correction`)
    read by the same statement (one round trip, not two, per cabinet of a batch of
    events). ``None``: no such cabinet."""
    row = conn.execute(
        "UPDATE cabinets c SET last_seen = greatest(c.last_seen, %s) WHERE c.id = %s"  # noqa: S608 (a constant)
        f" RETURNING c.online, {CORRECTION_S}",
        (now, cabinet),
    ).fetchone()
    if row is None:
        return None
    if not row[0]:
        # Bringing it online touches neither its clock fault nor its skew.
        mark_online(conn, cabinet, at=now, now=now)
    return correction_of(row[1])


def touch_nowait(conn: psycopg.Connection[Any], cabinets: list[str], *, now: datetime) -> None:
    """``last_seen`` of the online ones of ``cabinets`` whose row is free, without waiting.

    For the ack lane (ingest): an ack must not wait for the row lock an events
    transaction of its cabinet holds until it commits; that transaction is
    touching the row itself, at nearly the same time. An offline cabinet is left
    alone: it comes back online through :func:`touch` on the normal path (its
    next message). The result is never read, so in pipeline mode it costs no
    round trip of its own.
    """
    if cabinets:
        conn.execute(
            "UPDATE cabinets c SET last_seen = greatest(c.last_seen, %s)"
            " FROM (SELECT id FROM cabinets WHERE id = ANY(%s::text[]) AND online"
            " ORDER BY id FOR NO KEY UPDATE SKIP LOCKED) AS free WHERE c.id = free.id",
            (now, sorted(set(cabinets))),
        )


def mark_online(
    conn: psycopg.Connection[Any],
    cabinet: str,
    *,
    at: datetime,
    now: datetime,
    agent_version: str | None = None,
) -> bool:
    """Online as of ``at``; clears the offline alert. False if stale or unknown."""
    row = conn.execute(
        "UPDATE cabinets SET online = true, online_changed_at = %(at)s,"
        " last_seen = greatest(last_seen, %(at)s),"
        " agent_version = coalesce(%(version)s, agent_version)"
        " WHERE id = %(cabinet)s AND (online_changed_at IS NULL OR online_changed_at <= %(at)s)"
        " RETURNING id",
        {"at": at, "cabinet": cabinet, "version": agent_version},
    ).fetchone()
    if row is None:
        return False
    if clear_alert(conn, cabinet, AlertKind.OFFLINE, now=now) is not None:
        notify_presence(conn, cabinet, online=True, at=at)
    return True


def mark_offline(
    conn: psycopg.Connection[Any], cabinet: str, *, at: datetime, now: datetime, why: str
) -> bool:
    """Offline as of ``at``; raises the offline alert. False if stale, unknown or already."""
    row = conn.execute(
        "UPDATE cabinets SET online = false, online_changed_at = %(at)s"
        " WHERE id = %(cabinet)s AND online"
        " AND (online_changed_at IS NULL OR online_changed_at <= %(at)s) RETURNING id",
        {"at": at, "cabinet": cabinet},
    ).fetchone()
    if row is None:
        return False
    logger.warning("cabinet %s offline: %s", cabinet, why)
    raise_alert(conn, cabinet, AlertKind.OFFLINE, now=now, detail=why)
    notify_presence(conn, cabinet, online=False, at=at)
    return True
