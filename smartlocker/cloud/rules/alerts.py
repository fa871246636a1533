"""Alerts: raised and cleared idempotently, one open alert per (cabinet, compartment, kind).

Raising an alert that is already open bumps its ``occurrences`` and
``last_seen_at``; clearing one that is not open does nothing. Operators
acknowledge alerts (:func:`ack_alert`); acknowledging does not clear.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg

from ..errors import NotFound
from .notifications import notify_alert

__all__ = [
    "AlertKind",
    "ack_alert",
    "clear_alert",
    "clear_alerts",
    "raise_alert",
]

logger = logging.getLogger(__name__)


class AlertKind(StrEnum):
    FORCED_OPEN = "forced_open"
    HELD_OPEN = "held_open"
    UNLOCK_FAILED = "unlock_failed"  # the door did not open
    LOCK_FAULT = "lock_fault"
    TEMPERATURE = "temperature"
    OFFLINE = "offline"
    COMMAND_FAILED = "command_failed"
    FAULT = "fault"  # the cabinet itself is unwell (its clock: rules/clock.py)


def raise_alert(
    conn: psycopg.Connection[Any],
    cabinet: str,
    kind: AlertKind | str,
    *,
    now: datetime,
    compartment: str | None = None,
    detail: str | None = None,
) -> tuple[int, bool]:
    """Open (or bump) the alert; returns ``(alert id, newly raised)``."""
    kind = AlertKind(kind)
    row = conn.execute(
        """
        INSERT INTO alerts (cabinet, compartment, kind, detail, raised_at, last_seen_at)
        VALUES (%s, %s, %s, %s, %s, %s)
        ON CONFLICT (cabinet, (coalesce(compartment, '')), kind) WHERE cleared_at IS NULL
        DO UPDATE SET occurrences = alerts.occurrences + 1,
                      last_seen_at = greatest(alerts.last_seen_at, EXCLUDED.last_seen_at),
                      detail = coalesce(EXCLUDED.detail, alerts.detail)
        RETURNING id, (xmax = 0)
        """,
        (cabinet, compartment, kind.value, detail, now, now),
    ).fetchone()
    assert row is not None
    if row[1]:
        logger.warning("alert raised: %s %s %s (%s)", cabinet, compartment or "-", kind, detail)
        notify_alert(
            conn,
            int(row[0]),
            raised=True,
            cabinet=cabinet,
            kind=kind.value,
            compartment=compartment,
            at=now,
        )
    return int(row[0]), bool(row[1])


def clear_alert(
    conn: psycopg.Connection[Any],
    cabinet: str,
    kind: AlertKind | str,
    *,
    now: datetime,
    compartment: str | None = None,
) -> int | None:
    """Clear the open alert if there is one; returns its id."""
    kind = AlertKind(kind)
    row = conn.execute(
        "UPDATE alerts SET cleared_at = %s WHERE cabinet = %s"
        " AND coalesce(compartment, '') = coalesce(%s, '') AND kind = %s"
        " AND cleared_at IS NULL RETURNING id",
        (now, cabinet, compartment, kind.value),
    ).fetchone()
    if row is None:
        return None
    return _cleared(conn, cabinet, compartment, [(row[0], kind.value)], now)[0]


def clear_alerts(
    conn: psycopg.Connection[Any],
    cabinet: str,
    kinds: Sequence[AlertKind],
    *,
    now: datetime,
    compartment: str | None = None,
) -> list[int]:
    """:func:`clear_alert` for several kinds in one statement; returns the cleared ids."""
    rows = conn.execute(
        "UPDATE alerts SET cleared_at = %s WHERE cabinet = %s"
        " AND coalesce(compartment, '') = coalesce(%s, '') AND kind = ANY(%s)"
        " AND cleared_at IS NULL RETURNING id, kind",
        (now, cabinet, compartment, [AlertKind(k).value for k in kinds]),
    ).fetchall()
    return _cleared(conn, cabinet, compartment, rows, now)


def _cleared(
    conn: psycopg.Connection[Any],
    cabinet: str,
    compartment: str | None,
    rows: Sequence[tuple[Any, ...]],
    now: datetime,
) -> list[int]:
    """Alerts ``(id, kind)`` of one compartment just cleared: logged and notified, by id."""
    cleared = sorted((int(alert), str(kind)) for alert, kind in rows)
    for alert, kind in cleared:
        logger.info("alert cleared: %s %s %s", cabinet, compartment or "-", kind)
        notify_alert(
            conn,
            alert,
            raised=False,
            cabinet=cabinet,
            kind=kind,
            compartment=compartment,
            at=now,
        )
    return [alert for alert, _ in cleared]


def ack_alert(conn: psycopg.Connection[Any], alert: int, *, actor: str, now: datetime) -> None:
    """An operator has seen the alert (idempotent; the first acknowledgement stays)."""
    cur = conn.execute(
        "UPDATE alerts SET acked_at = coalesce(acked_at, %s), acked_by = coalesce(acked_by, %s)"
        " WHERE id = %s",
        (now, actor, alert),
    )
    if cur.rowcount == 0:
        raise NotFound(f"no alert {alert}", alert=alert)
