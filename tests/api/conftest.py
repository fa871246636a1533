"""Fixtures of the API tests: a migrated database, the app, keys of every role."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from smartlocker.cloud.api import ApiSettings, create_app
from smartlocker.cloud.api.auth import Role, create_key
from smartlocker.cloud.db import migrate


@pytest.fixture
def api_db(db_url: str) -> str:
    """A fresh database with every migration applied."""
    migrate(db_url)
    return db_url


def make_key(url: str, role: Role | str, sites: list[str] | None = None, name: str = "t") -> str:
    with psycopg.connect(url) as conn:
        return create_key(conn, name=name, role=Role(role), sites=sites).token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app(api_db: str) -> Iterator[Flask]:
    application = create_app(ApiSettings(database_url=api_db, pool_min=1, pool_max=4))
    try:
        yield application
    finally:
        application.extensions["smartlocker"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
