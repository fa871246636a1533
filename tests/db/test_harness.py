"""The harness really gives plain PostgreSQL and TimescaleDB (Apache) databases."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.pg import PgCluster

BUCKETS = """
    SELECT {fn}, count(*)::int
    FROM readings GROUP BY 1 ORDER BY 1
"""


def _fill(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE readings (ts timestamptz NOT NULL, cabinet text, value float8)")
    conn.execute(
        "INSERT INTO readings SELECT '2026-01-01'::timestamptz + i * interval '10 seconds',"
        " 'cab-1', i FROM generate_series(0, 29) AS i"
    )


def test_database_is_fresh_and_of_its_flavor(pg_cluster: PgCluster, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
        assert tables == (0,)
        ext = conn.execute("SELECT extname FROM pg_extension WHERE extname = 'timescaledb'")
        has_timescale = ext.fetchone() is not None
        assert has_timescale == (pg_cluster.flavor == "timescaledb")
        server = conn.execute("SHOW server_version").fetchone()
        assert server is not None
        assert server[0].startswith("15.")


def test_hypertable_and_time_bucket_or_date_bin(pg_cluster: PgCluster, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        _fill(conn)
        if pg_cluster.flavor == "timescaledb":
            license_row = conn.execute("SHOW timescaledb.license").fetchone()
            assert license_row == ("apache",)
            conn.execute("SELECT create_hypertable('readings', 'ts', migrate_data => true)")
            kind = conn.execute(
                "SELECT count(*) FROM timescaledb_information.hypertables"
                " WHERE hypertable_name = 'readings'"
            ).fetchone()
            assert kind == (1,)
            fn = "time_bucket('1 minute', ts)"
        else:
            fn = "date_bin('1 minute', ts, '2000-01-01')"
        rows = conn.execute(BUCKETS.format(fn=fn)).fetchall()
        assert [count for _, count in rows] == [6, 6, 6, 6, 6]
        assert rows[0][0].isoformat() == "2026-01-01T00:00:00+00:00"


def test_a_cluster_whose_port_was_taken_before_its_first_start_takes_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``free_port`` only finds a port free; another process may bind it first (here
    the first port it finds is given to a squatter before the server starts)."""
    import socket

    from smartlocker.embedded import pg_cluster

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real = pg_cluster.free_port
        monkeypatch.setattr(pg_cluster, "free_port", lambda: next(ports, None) or real())
        cluster = PgCluster("postgres")
        try:
            cluster.start()
            assert cluster.port != taken
            with psycopg.connect(cluster.admin_url) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            cluster.restart()  # once started, its port stays
            assert cluster.port != taken
            with psycopg.connect(cluster.admin_url) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            cluster.destroy()
