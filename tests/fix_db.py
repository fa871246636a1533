"""pytest plugin: private PostgreSQL clusters, plain and with TimescaleDB.

Every test that asks for ``db_url`` runs twice, once per flavor, each time on
a fresh database that is dropped afterwards. The clusters live for the session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support.pg import PgCluster

FLAVORS = ("postgres", "timescaledb")


@pytest.fixture(scope="session", params=FLAVORS)
def pg_cluster(request: pytest.FixtureRequest) -> Iterator[PgCluster]:
    """One private cluster per flavor for the whole session."""
    cluster = PgCluster(request.param)  # its port: a free one, chosen as it starts
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def db_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh, empty database on the current flavor, dropped after the test."""
    url = pg_cluster.create_database()
    try:
        yield url
    finally:
        pg_cluster.drop_database(url)
