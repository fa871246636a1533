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
