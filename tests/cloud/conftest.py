"""Fixtures for the rules: a migrated database with one site and cabinet, the cloud keys."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from smartlocker.cloud.db import migrate
from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.rules.fleet import CompartmentSpec, create_cabinet, create_site
from smartlocker.protocol import generate_private_key

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


@pytest.fixture
def core_url(db_url: str) -> str:
    """``db_url`` with every migration applied."""
    migrate(db_url)
    return db_url


@pytest.fixture
def conn(core_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection with site ``site-1`` and cabinet ``cab-1`` (:data:`LAYOUT`)."""
    with psycopg.connect(core_url, autocommit=True) as connection:
        create_site(connection, "site-1", "Main street")
        create_cabinet(connection, "cab-1", "site-1", LAYOUT)
        yield connection
