"""Each resource through HTTP, on both storage flavors, with cloud-core's rules underneath."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import psycopg
from flask.testing import FlaskClient

from smartlocker.cloud.api import ApiSettings, create_app
from smartlocker.cloud.api.broker import EmbeddedRegistrar, verify_mosquitto_password
from smartlocker.cloud.keys import CloudKeys
from smartlocker.protocol import Channel, TopicScheme, derive_code_key, load_public_key, utcnow
from tests.support.mqtt import NOT_AUTHORIZED, MqttTestClient, connected

from .conftest import World, bearer, make_key

PROBLEM = "application/problem+json"


def test_sites_create_list_get_patch(world: World) -> None:
    c = world.client
    listed = c.get("/api/v1/sites", headers=world.as_admin()).json
    assert [s["id"] for s in listed["items"]] == ["s1", "s2"]
    assert listed["next_cursor"] is None
    patched = c.patch(
        "/api/v1/sites/s1",
        json={"name": "Main station", "hold_hours": 24},
        headers=world.as_admin(),
    )
    assert patched.status_code == 200, patched.json
    assert patched.json["name"] == "Main station"
    assert patched.json["hold_hours"] == 24
    dup = c.post("/api/v1/sites", json={"id": "s1", "name": "again"}, headers=world.as_admin())
    assert dup.status_code == 409
    assert dup.content_type == PROBLEM
    assert dup.json["type"].endswith("/conflict")
    # a site-scoped key sees only its site
    assert [
        s["id"] for s in c.get("/api/v1/sites", headers=world.key("viewer", "s2")).json["items"]
    ] == ["s2"]


def test_validation_errors_list_the_fields(world: World) -> None:
    r = world.client.post(
        "/api/v1/sites",
        json={"id": "Bad Id", "name": "", "role": "admin"},
        headers=world.as_admin(),
    )
    assert r.status_code == 400
    assert r.content_type == PROBLEM
    assert r.json["type"] == "https://smartlocker.dev/problems/validation"
    locs = {tuple(e["loc"]) for e in r.json["errors"]}
    assert {("id",), ("name",), ("role",)} <= locs  # unknown fields are refused, not ignored
    bad_json = world.client.post(
        "/api/v1/sites",
        data=b"{not json",
        headers=world.as_admin(),
        content_type="application/json",
    )
    assert bad_json.status_code == 400


def test_provisioning_returns_credentials_once_and_stores_only_a_hash(
    world: World, cloud_keys: CloudKeys
) -> None:
    creds = world.provisioned["cab-1"]["credentials"]
    assert creds["mqtt_username"] == creds["mqtt_client_id"] == "cab-1"
    assert len(creds["mqtt_password"]) >= 40
    public = load_public_key(creds["cloud_public_key_pem"].encode())
    assert public.public_bytes_raw() == cloud_keys.signing_key.public_key().public_bytes_raw()
    assert bytes.fromhex(creds["code_key_hex"]) == derive_code_key(cloud_keys.code_secret, "cab-1")
    with psycopg.connect(world.url) as conn:
        (stored,) = conn.execute(
            "SELECT credentials_hash FROM cabinets WHERE id = 'cab-1'"
        ).fetchone()
    assert creds["mqtt_password"] not in stored
    assert verify_mosquitto_password(creds["mqtt_password"], stored)
    detail = world.client.get("/api/v1/cabinets/cab-1", headers=world.as_admin()).json
    assert "credentials" not in detail
    assert [c["id"] for c in detail["compartments"]] == ["A1", "A2", "A3"]
    assert detail["compartments"][0] | {} == detail["compartments"][0]
    assert detail["compartments"][0]["occupancy"] == "free"
    # the same cabinet again is a conflict, and nothing changes
    again = world.client.post(
        "/api/v1/cabinets",
        json={"id": "cab-1", "site": "s1", "compartments": [{"id": "B1", "size": "s"}]},
        headers=world.as_admin(),
    )
    assert again.status_code == 409


def test_compartment_patch_and_desired_state(world: World) -> None:
    c = world.client
    r = c.patch(
        "/api/v1/cabinets/cab-1/compartments/A1",
        json={"out_of_service": True},
        headers=world.key("operator"),
    )
    assert r.status_code == 200, r.json
    assert r.json["out_of_service"] is True
    assert (
        c.patch(
            "/api/v1/cabinets/cab-1/compartments/A1", json={}, headers=world.key("operator")
        ).status_code
        == 400
    )
    assert (
        c.patch(
            "/api/v1/cabinets/cab-1/compartments/ZZ",
            json={"enabled": False},
            headers=world.key("operator"),
        ).status_code
        == 404
    )
    with psycopg.connect(world.url) as conn:
        (version,) = conn.execute(
            "SELECT desired_version FROM cabinets WHERE id = 'cab-1'"
        ).fetchone()
        (action,) = conn.execute(
            "SELECT action FROM audit_log WHERE target = 'cab-1/A1' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert version >= 2  # provisioning published v1, the switch v2
    assert action == "compartment.update"


def test_reserve_cancel_extend_and_history(world: World) -> None:
    c = world.client
    r = c.post(
        "/api/v1/parcels",
        json={"size": "m", "site": "s1", "reference": "ORDER-1", "recipient": "ann@example.org"},
        headers=world.key("courier"),
    )
    assert r.status_code == 201, r.json
    parcel = r.json
    assert parcel["state"] == "reserved"
    assert parcel["compartment"] == "A2"  # the smallest that fits
    assert len(parcel["deposit_code"]) == 8
    got = c.get(f"/api/v1/parcels/{parcel['id']}", headers=world.key("viewer")).json
    assert "deposit_code" not in got
    assert [h["to_state"] for h in got["history"]] == ["reserved"]
    # extend is for operators; a courier may not
    later = (utcnow() + timedelta(days=5)).isoformat()
    assert (
        c.post(
            f"/api/v1/parcels/{parcel['id']}/extend",
            json={"deadline": later},
            headers=world.key("courier"),
        ).status_code
        == 403
    )
    ext = c.post(
        f"/api/v1/parcels/{parcel['id']}/extend",
        json={"deadline": later},
        headers=world.key("operator"),
    )
    assert ext.status_code == 200, ext.json
    cancelled = c.post(f"/api/v1/parcels/{parcel['id']}/cancel", headers=world.key("courier"))
    assert cancelled.status_code == 200, cancelled.json
    assert cancelled.json["state"] == "cancelled"
    again = c.post(f"/api/v1/parcels/{parcel['id']}/cancel", headers=world.key("courier"))
    assert again.status_code == 409
    assert again.json["type"].endswith("/invalid-transition")
    # the compartment is free again
    detail = c.get("/api/v1/cabinets/cab-1", headers=world.key("viewer")).json
    assert {x["id"]: x["occupancy"] for x in detail["compartments"]}["A2"] == "free"
    # a parcel id given twice is a conflict
    body = {"size": "s", "cabinet": "cab-1", "id": "P-1"}
    assert c.post("/api/v1/parcels", json=body, headers=world.key("courier")).status_code == 201
    dup = c.post("/api/v1/parcels", json=body, headers=world.key("courier"))
    assert dup.status_code == 409
    assert dup.json["type"].endswith("/conflict")


def test_no_compartment_available_is_a_conflict(world: World) -> None:
    c = world.client
    for _ in range(3):
        assert (
            c.post(
                "/api/v1/parcels",
                json={"size": "xs", "cabinet": "cab-2"},
                headers=world.key("courier", "s2"),
            ).status_code
            == 201
        )
    full = c.post(
        "/api/v1/parcels",
        json={"size": "xs", "cabinet": "cab-2"},
        headers=world.key("courier", "s2"),
    )
    assert full.status_code == 409
    assert full.json["type"].endswith("/no-compartment-available")


def test_pagination_walks_every_parcel_once(world: World) -> None:
    c = world.client
    ids = set()
    for _ in range(3):
        ids.add(
            c.post(
                "/api/v1/parcels", json={"size": "xs", "site": "s1"}, headers=world.key("courier")
            ).json["id"]
        )
    seen: list[str] = []
    cursor = None
    while True:
        q = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = c.get(f"/api/v1/parcels?{q}", headers=world.key("viewer")).json
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    assert c.get("/api/v1/parcels?limit=201", headers=world.key("viewer")).status_code == 400
    assert c.get("/api/v1/parcels?cursor=garbage", headers=world.key("viewer")).status_code == 400
    forged = base64.urlsafe_b64encode(b'["x"]').decode().rstrip("=")
    assert c.get(f"/api/v1/parcels?cursor={forged}", headers=world.key("viewer")).status_code == 400


def test_auth_failures_are_problems(client: FlaskClient, world: World) -> None:
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer slk_nope"},
        {"Authorization": "Bearer slk_0123456789abcdef_" + "A" * 43},
    ):
        r = client.get("/api/v1/sites", headers=headers)
        assert r.status_code == 401
        assert r.content_type == PROBLEM
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    token = world.keys[("admin", "s1")]
    with psycopg.connect(world.url) as conn:
        conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (token.split("_")[1],))
    assert (
        client.get("/api/v1/sites", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    )


def test_provisioned_credentials_log_in_and_reach_only_their_own_topics(
    api_db: str, cloud_keys: CloudKeys, publisher: Any, secure_broker: Any
) -> None:
    """The embedded broker's registrar: the cabinet logs in at once, under the ACL."""
    app = create_app(
        ApiSettings(database_url=api_db, pool_min=1, pool_max=2),
        keys=cloud_keys,
        publisher=publisher,
        registrar=EmbeddedRegistrar(secure_broker.broker),
    )
    try:
        admin = bearer(make_key(api_db, "admin"))
        c = app.test_client()
        assert (
            c.post("/api/v1/sites", json={"id": "acl", "name": "ACL"}, headers=admin).status_code
            == 201
        )
        r = c.post(
            "/api/v1/cabinets",
            json={"id": "cab-acl", "site": "acl", "compartments": [{"id": "A1", "size": "s"}]},
            headers=admin,
        )
        assert r.status_code == 201, r.json
        creds = r.json["credentials"]
        assert creds["broker_registered"] is True
    finally:
        app.extensions["smartlocker"].close()
    scheme = TopicScheme()
    with connected(
        secure_broker.host,
        secure_broker.port,
        username=creds["mqtt_username"],
        password=creds["mqtt_password"],
        client_id=creds["mqtt_client_id"],
    ) as cab:
        assert not cab.publish(scheme.topic("cab-acl", Channel.EVENTS), b"{}").is_failure
        assert cab.publish(scheme.topic("cab-a", Channel.EVENTS), b"{}").value == NOT_AUTHORIZED
    wrong = MqttTestClient(
        secure_broker.host, secure_broker.port, username="cab-acl", password="not-it"
    )
    try:
        assert wrong.connect().is_failure
    finally:
        wrong.close()
