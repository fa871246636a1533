"""Migrations apply once, in order, on both storage flavors."""

from __future__ import annotations

import psycopg
from click.testing import CliRunner

from smartlocker.cli import main
from smartlocker.cloud.db import Edition, available_migrations, detect_edition, migrate
from tests.support.pg import PgCluster


def test_migrate_is_idempotent_and_detects_the_edition(pg_cluster: PgCluster, db_url: str) -> None:
    versions = [m.version for m in available_migrations()]
    assert migrate(db_url) == versions
    assert migrate(db_url) == []
    with psycopg.connect(db_url) as conn:
        edition = detect_edition(conn)
    expected = (
        Edition.TIMESCALEDB_APACHE if pg_cluster.flavor == "timescaledb" else Edition.POSTGRESQL
    )
    assert edition is expected


def test_cli_migrate_reports_the_edition(pg_cluster: PgCluster, db_url: str) -> None:
    result = CliRunner().invoke(main, ["db", "migrate"], env={"SMARTLOCKER_DATABASE_URL": db_url})
    assert result.exit_code == 0, result.output
    assert "storage edition: " in result.output
    assert ("timescaledb-apache" in result.output) == (pg_cluster.flavor == "timescaledb")


def test_cli_migrate_gives_a_clear_error_for_an_unreachable_database() -> None:
    from smartlocker.embedded.mosquitto import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    result = CliRunner().invoke(main, ["db", "migrate"], env={"SMARTLOCKER_DATABASE_URL": url})
    assert result.exit_code == 1
    assert "database error" in result.output


def test_0012_carries_each_cabinets_command_counter_over(db_url: str) -> None:
    """A cabinet refuses a counter it has seen (or one far below its high-water mark):
    after the move to command_counters the next command must continue where the column
    left off."""
    from smartlocker.cloud.rules.commands import create_command
    from smartlocker.protocol import utcnow

    migrate(db_url, upto="0011")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO sites (id, name) VALUES ('m', 'm')")
        for cabinet, counter in (("used", 41), ("fresh", 0)):
            conn.execute(
                "INSERT INTO cabinets (id, site, command_counter) VALUES (%s, 'm', %s)",
                (cabinet, counter),
            )
            conn.execute(
                "INSERT INTO compartments (cabinet, id, size) VALUES (%s, 'A1', 's')", (cabinet,)
            )
    assert migrate(db_url) == [m.version for m in available_migrations() if m.version > "0011"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        now = utcnow()
        used = create_command(conn, "used", "A1", reason=None, actor="t", now=now)
        fresh = create_command(conn, "fresh", "A1", reason=None, actor="t", now=now)
        assert (used.counter, fresh.counter) == (42, 1)
