"""Rate limits through HTTP: unlocks per key, and wrong pickup codes like the kiosk's."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from flask import Flask

from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.rules.parcels import record_deposit
from smartlocker.protocol import utcnow
from tests.support.outbox import queued_codes

from .conftest import World


@pytest.fixture
def tight_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(pool_min=1, pool_max=2, unlocks_per_minute=3)


def test_unlocks_are_limited_per_key(world: World, tight_app: Flask) -> None:
    c = tight_app.test_client()
    url = "/api/v1/cabinets/cab-1/compartments/A1/unlock"
    codes = [
        c.post(url, json={"reason": "limit test"}, headers=world.key("operator")).status_code
        for _ in range(4)
    ]
    assert codes == [202, 202, 202, 429]
    limited = c.post(url, json={"reason": "limit test"}, headers=world.key("operator"))
    assert limited.json["type"].endswith("/rate-limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # another key has its own budget
    assert c.post(url, json={"reason": "x" * 5}, headers=world.key("admin")).status_code == 202


def test_wrong_pickup_codes_lock_out_like_the_kiosk(world: World, cloud_keys: CloudKeys) -> None:
    c = world.client
    parcel = c.post(
        "/api/v1/parcels",
        json={"size": "s", "cabinet": "cab-1", "recipient": "+4915100000000"},
        headers=world.key("courier"),
    ).json["id"]
    # the door closed after the deposit (what ingest's reactions do)
    with psycopg.connect(world.url, autocommit=True) as conn:
        record_deposit(conn, cloud_keys, parcel, now=utcnow(), actor="test")
        (queued,) = queued_codes(conn, parcel)
    code = queued.code
    url = f"/api/v1/parcels/{parcel}/pickup"
    wrong = "1234 5678" if code != "12345678" else "87654321"
    answers = [c.post(url, json={"code": wrong}, headers=world.key("courier")) for _ in range(5)]
    assert [a.status_code for a in answers] == [422] * 5
    assert all(a.json["type"].endswith("/wrong-code") for a in answers)
    # the fifth wrong code started a lockout: even the right code waits now
    locked = c.post(url, json={"code": code}, headers=world.key("courier"))
    assert locked.status_code == 429
    assert locked.json["type"].endswith("/code-throttled")
    assert 25 <= locked.json["retry_after"] <= 31
    # the lockout is the parcel's: another key is refused as well
    other = c.post(url, json={"code": code}, headers=world.key("operator"))
    assert other.status_code == 429
    # malformed codes count as wrong codes, they do not crash anything
    other_parcel = c.post(
        "/api/v1/parcels", json={"size": "s", "cabinet": "cab-1"}, headers=world.key("admin")
    ).json["id"]
    with psycopg.connect(world.url, autocommit=True) as conn:
        record_deposit(conn, cloud_keys, other_parcel, now=utcnow(), actor="test")
    bad = c.post(
        f"/api/v1/parcels/{other_parcel}/pickup", json={"code": "abc"}, headers=world.key("admin")
    )
    assert bad.status_code == 422
