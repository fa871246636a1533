"""Fixtures of the API tests: a migrated database, the app with real keys and a real
MQTT publisher (the session's private Mosquitto), API keys of every role, and a world
of two sites with one cabinet each."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from smartlocker.cloud.api import ApiSettings, create_app
from smartlocker.cloud.api.auth import Role, create_key
from smartlocker.cloud.api.publisher import ApiPublisher, connect_publisher
from smartlocker.cloud.db import migrate
from smartlocker.cloud.keys import CloudKeys
from smartlocker.embedded import MosquittoBroker
from smartlocker.protocol import generate_private_key, utcnow


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


@pytest.fixture(scope="session")
def cloud_keys() -> CloudKeys:
    return CloudKeys.from_private_key(generate_private_key())


@pytest.fixture
def publisher(mqtt_broker: MosquittoBroker) -> Iterator[ApiPublisher]:
    pub = connect_publisher(mqtt_broker.url)
    assert pub.is_connected()
    try:
        yield pub
    finally:
        pub.close()


class Clock:
    """A settable clock for the app (``None``: the real time)."""

    def __init__(self) -> None:
        self.fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self.fixed or utcnow()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_app(
    api_db: str, cloud_keys: CloudKeys, publisher: ApiPublisher, clock: Clock
) -> Iterator[Callable[..., Flask]]:
    """Build apps on the test database with the given settings; closed afterwards."""
    apps: list[Flask] = []

    def make(**settings: Any) -> Flask:
        application = create_app(
            ApiSettings(database_url=api_db, **settings),
            keys=cloud_keys,
            publisher=publisher,
            clock=clock,
        )
        apps.append(application)
        return application

    try:
        yield make
    finally:
        for application in apps:
            application.extensions["smartlocker"].close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    # No cabinet answers here: a ?wait= gives up quickly.
    return make_app(pool_min=1, pool_max=4, max_wait_seconds=0.2)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@dataclass
class World:
    """Two sites with one cabinet each, and keys: admin of all, and each role per site."""

    url: str
    client: FlaskClient
    admin: str
    keys: dict[tuple[str, str], str] = field(default_factory=dict)  # (role, site) -> token
    provisioned: dict[str, Any] = field(default_factory=dict)

    def key(self, role: str, site: str = "s1") -> dict[str, str]:
        return bearer(self.keys[(role, site)])

    def as_admin(self) -> dict[str, str]:
        return bearer(self.admin)


SITES = {"s1": "cab-1", "s2": "cab-2"}


@pytest.fixture
def world(api_db: str, client: FlaskClient) -> World:
    w = World(url=api_db, client=client, admin=make_key(api_db, Role.ADMIN, None, "root"))
    for site, cabinet in SITES.items():
        r = client.post(
            "/api/v1/sites", json={"id": site, "name": f"Site {site}"}, headers=w.as_admin()
        )
        assert r.status_code == 201, r.json
        r = client.post(
            "/api/v1/cabinets",
            json={
                "id": cabinet,
                "site": site,
                "compartments": [
                    {"id": "A1", "size": "s"},
                    {"id": "A2", "size": "m"},
                    {"id": "A3", "size": "l"},
                ],
            },
            headers=w.as_admin(),
        )
        assert r.status_code == 201, r.json
        w.provisioned[cabinet] = r.json
        for role in Role:
            w.keys[(role.value, site)] = make_key(api_db, role, [site], f"{role.value}@{site}")
    return w
