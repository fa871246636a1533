"""Bucketing and retention work the same on PostgreSQL and TimescaleDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from smartlocker.cloud.db import migrate
from smartlocker.cloud.timeseries import apply_retention, telemetry_rollup

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_rollup_and_retention(db_url: str) -> None:
    migrate(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO telemetry (cabinet, ts, id, uptime_s, outbox_depth, cpu_temp_c)"
            " SELECT 'cab-t', %s + i * interval '10 seconds', 'm' || i, i, i %% 3, 40 + i"
            " FROM generate_series(0, 29) AS i",
            (T0,),
        )
        conn.execute(
            "INSERT INTO telemetry (cabinet, ts, id, uptime_s, outbox_depth)"
            " VALUES ('cab-t', %s, 'old', 0, 0)",
            (T0 - timedelta(days=40),),
        )
        buckets = telemetry_rollup(
            conn, "cab-t", timedelta(minutes=1), T0, T0 + timedelta(minutes=5)
        )
        assert [b.start for b in buckets] == [T0 + timedelta(minutes=i) for i in range(5)]
        assert [b.readings for b in buckets] == [6] * 5
        assert buckets[0].cpu_temp_max == 45
        removed = apply_retention(conn, {"telemetry": timedelta(days=30)}, T0)
        assert removed["telemetry"] >= 1
        left = conn.execute("SELECT count(*) FROM telemetry").fetchone()
        assert left == (30,)
