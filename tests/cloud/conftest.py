"""Fixtures for the rules: a migrated database with one site and cabinet, the cloud keys."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from smartlocker.cloud.db import migrate
from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.rules.fleet import CompartmentSpec, create_cabinet, create_site
from smartlocker.protocol import generate_private_key
from tests.support.pg import PgCluster

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

#: cab-1: two small, one medium, one large, one cold medium compartment.
LAYOUT = (
    CompartmentSpec("A1", "s"),
    CompartmentSpec("A2", "s"),
    CompartmentSpec("B1", "m"),
    CompartmentSpec("C1", "l"),
    CompartmentSpec("K1", "m", temperature_controlled=True, temp_min_c=2.0, temp_max_c=8.0),
)


@pytest.fixture(scope="session")
def keys() -> CloudKeys:
    return CloudKeys.from_private_key(generate_private_key())


@pytest.fixture(scope="session")
def migrated_db(pg_cluster: PgCluster) -> Iterator[tuple[str, sql.Composed]]:
    """One migrated database per flavor, and how to empty it again.

    Creating and migrating a database per test costs about a second (TimescaleDB's
    extension most of it); emptying the tables that migrations leave empty costs a
    few milliseconds, so the rules' tests share one database per flavor.
    """
    url = pg_cluster.create_database()
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            str(row[0])
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'schema_migrations' ORDER BY tablename"
            )
        ]
        empty = [
            t
            for t in tables
            if conn.execute(
                sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(t))
            ).fetchone()
            == (True,)
        ]
    truncate = sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
        sql.SQL(", ").join(map(sql.Identifier, empty))
    )
    try:
        yield url, truncate
    finally:
        pg_cluster.drop_database(url)


@pytest.fixture
def core_url(migrated_db: tuple[str, sql.Composed]) -> str:
    """A migrated database with no data (the flavor's shared one, emptied)."""
    url, truncate = migrated_db
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(truncate)
    return url


@pytest.fixture
def conn(core_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection with site ``site-1`` and cabinet ``cab-1`` (:data:`LAYOUT`)."""
    with psycopg.connect(core_url, autocommit=True) as connection:
        create_site(connection, "site-1", "Main street")
        create_cabinet(connection, "cab-1", "site-1", LAYOUT)
        yield connection
