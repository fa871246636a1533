"""Presence: birth and last will, heartbeat silence, and anti-flap.

Every message but a last will proves the cabinet alive (``last_seen``; written at
most once a second per cabinet to spare the database). What the rules are told is
kept in ``ingest_presence.online`` so that each change is reported once, by
whichever worker sees it:

* birth (``online: true``): reported at once unless the rules already think so;
  it also cancels a pending last will (the cabinet reconnected within the grace,
  so the rules never hear of the blip: that is the anti-flap);
* last will (``online: false``): becomes *pending* and is reported only when the
  cabinet stays silent for ``flap_grace`` seconds;
* silence: a cabinet the rules think online that sent nothing for
  ``heartbeat_timeout`` goes to ``reactions.on_silence``;
* any other message from a cabinet the rules think offline reports it online
  again (its connection survived while its heartbeats were lost).

Status messages carry their ``ts``; an older status than the one applied is
ignored, since workers sharing the stream may reorder them. (The agent stamps a
connection's last will and its birth with the same ``ts``, taken just before it
connects, so a will is as new as the birth it ends.) Seen times are receipt
times: a cabinet's clock may be wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from smartlocker.protocol import Status

__all__ = ["PresencePolicy", "apply_statuses", "sweep", "touch", "touch_nowait"]

logger = logging.getLogger(__name__)

#: ``last_seen`` is written when it moved by more than this.
TOUCH_RESOLUTION = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class PresencePolicy:
    heartbeat_timeout: timedelta = timedelta(seconds=90)
    flap_grace: timedelta = timedelta(seconds=15)


def touch(
    conn: psycopg.Connection[Any], seen: Mapping[str, datetime]
) -> list[tuple[str, datetime]]:
    """Record ``last_seen``; returns the cabinets the rules think offline (and when seen)."""
    if not seen:
        return []
    names = sorted(seen)
    rows = conn.execute(
        "INSERT INTO ingest_presence AS p (cabinet, last_seen)"
        " SELECT * FROM unnest(%s::text[], %s::timestamptz[])"
        " ON CONFLICT (cabinet) DO UPDATE SET last_seen = excluded.last_seen"
        " WHERE p.last_seen < excluded.last_seen - %s OR p.online IS FALSE"
        " RETURNING cabinet, online, last_seen",
        (names, [seen[n] for n in names], TOUCH_RESOLUTION),
    ).fetchall()
    return [(r[0], r[2]) for r in rows if r[1] is False]


def touch_nowait(conn: psycopg.Connection[Any], cabinets: Iterable[str], now: datetime) -> None:
    """:func:`touch` for the ack lane: rows that are free, of cabinets thought online.

    A row locked by another transaction (an events batch of the cabinet, which
    is touching it too) is skipped rather than waited for; a cabinet without a
    row or thought offline is left to the normal path's :func:`touch`, which
    creates or revives it with its next message. No result is read: in
    pipeline mode this costs no round trip of its own.
    """
    names = sorted(set(cabinets))
    if names:
        conn.execute(
            "UPDATE ingest_presence p SET last_seen = %s"
            " FROM (SELECT cabinet FROM ingest_presence WHERE cabinet = ANY(%s::text[])"
            " AND online IS NOT FALSE AND last_seen < %s"
            " ORDER BY cabinet FOR NO KEY UPDATE SKIP LOCKED) AS free"
            " WHERE p.cabinet = free.cabinet",
            (now, names, now - TOUCH_RESOLUTION),
        )


def apply_statuses(
    conn: psycopg.Connection[Any],
    statuses: Iterable[Status],
    now: datetime,
    report: Callable[[Status], None],
) -> None:
    """Births and last wills, newest per cabinet; ``report`` tells the rules."""
    newest: dict[str, Status] = {}
    for s in statuses:
        if s.cabinet not in newest or s.ts >= newest[s.cabinet].ts:
            newest[s.cabinet] = s
    for name in sorted(newest):
        s = newest[name]
        row = conn.execute(
            "INSERT INTO ingest_presence AS p (cabinet, last_seen) VALUES (%s, %s)"
            " ON CONFLICT (cabinet) DO UPDATE SET cabinet = excluded.cabinet"
            " RETURNING online, status_ts",
            (name, now),
        ).fetchone()
        assert row is not None
        online, status_ts = row
        if status_ts is not None and s.ts < status_ts:
            logger.debug("stale status of %s ignored (%s < %s)", name, s.ts, status_ts)
            continue
        if s.online:
            conn.execute(
                "UPDATE ingest_presence SET status_ts = %s, offline_pending = NULL,"
                " online = true, changed_at = CASE WHEN online THEN changed_at ELSE %s END,"
                " last_seen = greatest(last_seen, %s) WHERE cabinet = %s",
                (s.ts, now, now, name),
            )
            if online is not True:
                report(s)
        else:
            conn.execute(
                "UPDATE ingest_presence SET status_ts = %s,"
                " offline_pending = CASE WHEN online IS FALSE THEN NULL"
                " ELSE coalesce(offline_pending, %s) END WHERE cabinet = %s",
                (s.ts, now, name),
            )


def sweep(
    conn: psycopg.Connection[Any],
    now: datetime,
    policy: PresencePolicy,
    report_offline: Callable[[Status], None],
    report_silence: Callable[[str, datetime], None],
) -> int:
    """Report pending wills past the grace and silent cabinets; returns how many."""
    wills = conn.execute(
        "SELECT cabinet, status_ts FROM ingest_presence"
        " WHERE offline_pending < %s AND online IS NOT FALSE"
        " ORDER BY cabinet FOR UPDATE SKIP LOCKED",
        (now - policy.flap_grace,),
    ).fetchall()
    for name, status_ts in wills:
        report_offline(Status(cabinet=name, online=False, ts=status_ts or now))
    silent = conn.execute(
        "SELECT cabinet, last_seen FROM ingest_presence"
        " WHERE online IS NOT FALSE AND offline_pending IS NULL AND last_seen < %s"
        " ORDER BY cabinet FOR UPDATE SKIP LOCKED",
        (now - policy.heartbeat_timeout,),
    ).fetchall()
    for name, last_seen in silent:
        report_silence(name, last_seen)
    gone = [r[0] for r in wills] + [r[0] for r in silent]
    if gone:
        conn.execute(
            "UPDATE ingest_presence SET online = false, offline_pending = NULL, changed_at = %s"
            " WHERE cabinet = ANY(%s::text[])",
            (now, gone),
        )
        logger.info("offline: %d by last will, %d by silence", len(wills), len(silent))
    return len(gone)


def mark_online(conn: psycopg.Connection[Any], cabinets: Iterable[str], now: datetime) -> None:
    names = sorted(set(cabinets))
    if names:
        conn.execute(
            "UPDATE ingest_presence SET online = true, offline_pending = NULL, changed_at = %s"
            " WHERE cabinet = ANY(%s::text[])",
            (now, names),
        )
