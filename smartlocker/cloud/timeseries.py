"""Time-series helpers over ``events`` and ``telemetry`` for the API and jobs.

One schema serves both storage editions: :func:`bucket` picks TimescaleDB's
``time_bucket`` or PostgreSQL's ``date_bin``; :func:`apply_retention` drops old
chunks (TimescaleDB, Apache edition has ``drop_chunks``) or deletes in slices
(plain PostgreSQL).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql

from .db.edition import Edition, detect_edition

__all__ = ["TelemetryBucket", "apply_retention", "bucket", "telemetry_rollup"]

logger = logging.getLogger(__name__)

_ORIGIN = "2000-01-03T00:00:00+00:00"  # a Monday, as time_bucket's default origin
Table = Literal["events", "telemetry"]
_TABLES: tuple[Table, ...] = ("events", "telemetry")


def bucket(edition: Edition, width: timedelta, column: str = "ts") -> sql.Composable:
    """``time_bucket(width, column)`` or the equivalent ``date_bin``; same boundaries."""
    if width <= timedelta(0):
        raise ValueError("bucket width must be positive")
    fn = "time_bucket" if edition.has_timescaledb else "date_bin"
    return sql.SQL("{}({}::interval, {}, {}::timestamptz)").format(
        sql.SQL(fn), sql.Literal(width), sql.Identifier(column), sql.Literal(_ORIGIN)
    )


@dataclass(frozen=True, slots=True)
class TelemetryBucket:
    start: datetime
    readings: int
    cpu_temp_avg: float | None
    cpu_temp_max: float | None
    outbox_depth_max: int | None
    #: Average reading of each compartment that reported a temperature.
    compartment_temps: dict[str, float] = field(default_factory=dict)


def telemetry_rollup(
    conn: psycopg.Connection[Any],
    cabinet: str,
    width: timedelta,
    since: datetime,
    until: datetime,
    *,
    edition: Edition | None = None,
) -> list[TelemetryBucket]:
    """One cabinet's telemetry bucketed by ``width`` over ``[since, until)``."""
    edition = edition or detect_edition(conn)
    query = sql.SQL(
        "SELECT {b} AS start, count(*), avg(cpu_temp_c), max(cpu_temp_c), max(outbox_depth)"
        " FROM telemetry WHERE cabinet = %s AND ts >= %s AND ts < %s"
        " GROUP BY start ORDER BY start"
    ).format(b=bucket(edition, width))
    rows = conn.execute(query, (cabinet, since, until)).fetchall()
    temps: dict[datetime, dict[str, float]] = {}
    per_compartment = sql.SQL(
        "SELECT {b} AS start, t.key, avg(t.value::float8)"
        " FROM telemetry, jsonb_each_text(compartment_temps) AS t(key, value)"
        " WHERE cabinet = %s AND ts >= %s AND ts < %s AND compartment_temps <> '{{}}'"
        " GROUP BY start, t.key"
    ).format(b=bucket(edition, width))
    for start, compartment, celsius in conn.execute(per_compartment, (cabinet, since, until)):
        temps.setdefault(start, {})[compartment] = celsius
    return [
        TelemetryBucket(
            start=start,
            readings=readings,
            cpu_temp_avg=cpu_avg,
            cpu_temp_max=cpu_max,
            outbox_depth_max=depth,
            compartment_temps=temps.get(start, {}),
        )
        for start, readings, cpu_avg, cpu_max, depth in rows
    ]


def apply_retention(
    conn: psycopg.Connection[Any],
    keep: dict[Table, timedelta],
    now: datetime,
    *,
    edition: Edition | None = None,
    slice_rows: int = 50_000,
) -> dict[str, int]:
    """Remove rows older than ``now - keep[table]``; returns what was removed per table.

    TimescaleDB: whole chunks (``drop_chunks``, count of chunks). PostgreSQL: rows,
    deleted in slices so no transaction holds locks for long (count of rows).
    Run it from a periodic job, on a connection in autocommit mode.
    """
    edition = edition or detect_edition(conn)
    removed: dict[str, int] = {}
    for table, age in keep.items():
        if table not in _TABLES:
            raise ValueError(f"no retention for {table!r}")
        cutoff = now - age
        if edition.has_timescaledb:
            rows = conn.execute(
                "SELECT drop_chunks(%s::regclass, older_than => %s::timestamptz)",
                (table, cutoff),
            ).fetchall()
            removed[table] = len(rows)
        else:
            total = 0
            while True:
                cur = conn.execute(
                    sql.SQL(
                        "DELETE FROM {t} WHERE ctid = ANY(ARRAY("
                        "SELECT ctid FROM {t} WHERE ts < %s LIMIT %s))"
                    ).format(t=sql.Identifier(table)),
                    (cutoff, slice_rows),
                )
                total += cur.rowcount
                if cur.rowcount < slice_rows:
                    break
            removed[table] = total
        logger.info("retention: %s older than %s: %d removed", table, cutoff, removed[table])
    return removed
