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


def test_a_key_past_its_limit_learns_nothing_of_cabinets_and_compartments(
    world: World, tight_app: Flask
) -> None:
    """The limit speaks before the scope: past it, another site's cabinet, a cabinet
    that does not exist and a compartment that does not exist all answer 429; the
    refused requests count nothing, audit nothing, create nothing."""
    c = tight_app.test_client()
    key = world.key("operator", "s1")
    mine = "/api/v1/cabinets/cab-1/compartments/A1/unlock"
    before_limit = [
        c.post(url, json={"reason": "probe"}, headers=key).status_code
        for url in (
            mine,
            "/api/v1/cabinets/cab-2/compartments/A1/unlock",  # site s2's
            "/api/v1/cabinets/cab-1/compartments/ZZ/unlock",
            mine,
            mine,
        )
    ]
    assert before_limit == [202, 404, 404, 202, 202]  # refusals did not count
    past = [
        c.post(url, json={"reason": "probe"}, headers=key).status_code
        for url in (
            "/api/v1/cabinets/cab-2/compartments/A1/unlock",
            "/api/v1/cabinets/nowhere/compartments/A1/unlock",
            "/api/v1/cabinets/cab-1/compartments/ZZ/unlock",
            mine,
        )
    ]
    assert past == [429, 429, 429, 429]
    with psycopg.connect(world.url) as conn:
        assert conn.execute("SELECT count(*) FROM commands").fetchone() == (3,)
        assert conn.execute(
            "SELECT count(*) FROM audit_log WHERE action LIKE 'compartment.unlock.%'"
        ).fetchone() == (3,)
        assert conn.execute(
            "SELECT sum(hits) FROM api_rate_limits WHERE bucket LIKE 'unlock:%'"
        ).fetchone() == (3,)


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
