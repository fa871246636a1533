"""Two sites x four roles x every endpoint: no cross-site success, no role escalation.

Every operation of the registry must appear in EXPECTED (a new endpoint fails this
test until its roles are written down here). Each is called with a key of every
role limited to site s1 and to site s2, aimed at objects of s1:

* s2 keys never succeed (2xx) on an s1 object, get 404 for it (not 403: existence does
  not leak), and lists never show them s1 rows;
* a role not in the expected set gets 403, a role in it never gets 401/403.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

from smartlocker.cloud.api import blueprints
from smartlocker.cloud.api.routing import OPERATIONS
from smartlocker.cloud.rules.alerts import raise_alert
from smartlocker.protocol import utcnow

from .conftest import World

ANY = {"admin", "operator", "courier", "viewer"}
PARCELS = {"admin", "operator", "courier"}
OPERATE = {"admin", "operator"}
ADMIN = {"admin"}

EXPECTED: dict[tuple[str, str], set[str]] = {
    ("GET", "/healthz"): set(),
    ("GET", "/readyz"): set(),
    ("GET", "/api/v1/sites"): ANY,
    ("POST", "/api/v1/sites"): ADMIN,
    ("GET", "/api/v1/sites/{site}"): ANY,
    ("PATCH", "/api/v1/sites/{site}"): ADMIN,
    ("GET", "/api/v1/cabinets"): ANY,
    ("POST", "/api/v1/cabinets"): ADMIN,
    ("GET", "/api/v1/cabinets/{cabinet}"): ANY,
    ("PATCH", "/api/v1/cabinets/{cabinet}/compartments/{compartment}"): OPERATE,
    ("POST", "/api/v1/cabinets/{cabinet}/compartments/{compartment}/unlock"): OPERATE,
    ("GET", "/api/v1/commands/{command}"): ANY,
    ("GET", "/api/v1/parcels"): ANY,
    ("POST", "/api/v1/parcels"): PARCELS,
    ("GET", "/api/v1/parcels/{parcel}"): ANY,
    ("POST", "/api/v1/parcels/{parcel}/deposit"): PARCELS,
    ("POST", "/api/v1/parcels/{parcel}/pickup"): PARCELS,
    ("POST", "/api/v1/parcels/{parcel}/return"): PARCELS,
    ("POST", "/api/v1/parcels/{parcel}/cancel"): PARCELS,
    ("POST", "/api/v1/parcels/{parcel}/extend"): OPERATE,
    ("POST", "/api/v1/parcels/{parcel}/resend-code"): OPERATE,
    ("GET", "/api/v1/events"): ANY,
    ("GET", "/api/v1/cabinets/{cabinet}/telemetry"): ANY,
    ("GET", "/api/v1/stats/occupancy"): ANY,
    ("GET", "/api/v1/me"): ANY,
    ("GET", "/api/v1/alerts"): ANY,
    ("POST", "/api/v1/alerts/{alert}/ack"): OPERATE,
    ("PATCH", "/api/v1/parcels/{parcel}/recipient"): PARCELS,
    ("GET", "/api/v1/notifications"): OPERATE,
    ("GET", "/api/v1/webhooks"): OPERATE,
    ("POST", "/api/v1/webhooks"): OPERATE,
    ("DELETE", "/api/v1/webhooks/{webhook}"): OPERATE,
}


def _s1_objects(world: World) -> dict[str, str]:
    c = world.client
    parcel = c.post(
        "/api/v1/parcels", json={"size": "s", "cabinet": "cab-1"}, headers=world.as_admin()
    ).json["id"]
    command = c.post(
        "/api/v1/cabinets/cab-1/compartments/A3/unlock",
        json={"reason": "matrix setup"},
        headers=world.as_admin(),
    ).json["id"]
    webhook = c.post(
        "/api/v1/webhooks",
        json={"site": "s1", "url": "http://127.0.0.1:9/hook", "event_types": ["alert.raised"]},
        headers=world.as_admin(),
    ).json["id"]
    with psycopg.connect(world.url) as conn:
        alert, _ = raise_alert(conn, "cab-1", "forced_open", now=utcnow(), compartment="A1")
    return {
        "site": "s1",
        "cabinet": "cab-1",
        "compartment": "A1",
        "parcel": parcel,
        "command": command,
        "alert": str(alert),
        "webhook": str(webhook),
    }


def _request(method: str, path: str, ids: dict[str, str]) -> tuple[str, dict[str, Any] | None]:
    url = path.format(**ids)
    later = (utcnow() + timedelta(days=3)).isoformat()
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/api/v1/sites"): {"id": "s9", "name": "new"},
        ("PATCH", "/api/v1/sites/{site}"): {"name": "renamed"},
        ("POST", "/api/v1/cabinets"): {
            "id": "cab-9",
            "site": "s1",
            "compartments": [{"id": "A1", "size": "s"}],
        },
        ("PATCH", "/api/v1/cabinets/{cabinet}/compartments/{compartment}"): {"enabled": True},
        ("POST", "/api/v1/cabinets/{cabinet}/compartments/{compartment}/unlock"): {
            "reason": "matrix"
        },
        ("POST", "/api/v1/parcels"): {"size": "xs", "cabinet": "cab-1"},
        ("POST", "/api/v1/parcels/{parcel}/pickup"): {"code": "12345678"},
        ("POST", "/api/v1/parcels/{parcel}/extend"): {"deadline": later},
        ("PATCH", "/api/v1/parcels/{parcel}/recipient"): {"locale": "de"},
        ("POST", "/api/v1/webhooks"): {
            "site": "s1",
            "url": "http://127.0.0.1:9/hook",
            "event_types": ["parcel.deposited"],
        },
    }
    query = {
        ("GET", "/api/v1/cabinets/{cabinet}/telemetry"): "?bucket=1h",
        ("GET", "/api/v1/stats/occupancy"): "?site=s1",
        ("GET", "/api/v1/events"): "?site=s1",
        ("GET", "/api/v1/parcels"): "?site=s1",
        ("GET", "/api/v1/cabinets"): "?site=s1",
        ("GET", "/api/v1/alerts"): "?site=s1",
        ("GET", "/api/v1/notifications"): "?site=s1",
    }
    return url + query.get((method, path), ""), bodies.get((method, path))


def _leaks_s1(body: Any) -> bool:
    """Whether a list answer contains anything of site s1."""
    text = str(body)
    return "'s1'" in text or "cab-1" in text


def test_every_endpoint_is_in_the_matrix() -> None:
    assert blueprints.ALL
    assert {(op.method, op.path) for op in OPERATIONS} == set(EXPECTED)


def test_two_sites_four_roles_every_endpoint(world: World) -> None:
    ids = _s1_objects(world)
    cross_site_successes: list[str] = []
    escalations: list[str] = []
    denied_wrongly: list[str] = []
    server_errors: list[str] = []
    leaks: list[str] = []
    calls = 0
    for op in OPERATIONS:
        if op.roles is None:
            continue
        allowed = EXPECTED[(op.method, op.path)]
        url, body = _request(op.method, op.path, ids)
        is_list = op.method == "GET" and "{" not in op.path
        for site in ("s1", "s2"):
            for role in sorted(ANY):
                r = world.client.open(
                    url, method=op.method, json=body, headers=world.key(role, site)
                )
                calls += 1
                where = f"{op.method} {url} as {role}@{site}: {r.status_code}"
                if r.status_code >= 500:
                    server_errors.append(where + f" {r.json}")
                if role not in allowed:
                    if r.status_code != 403:
                        escalations.append(where)
                    continue
                if site == "s2":
                    ok = 200 <= r.status_code < 300
                    if ok and (not is_list or _leaks_s1(r.json)):
                        cross_site_successes.append(where + f" {r.json}")
                    # another site's object is "not found" (its existence does not leak)
                    creates_site = (op.method, op.path) == ("POST", "/api/v1/sites")
                    if not is_list and not creates_site and r.status_code != 404:
                        leaks.append(where)
                    continue
                # a scoped admin may not create sites: that needs a key of every site
                if (op.method, op.path) == ("POST", "/api/v1/sites"):
                    if r.status_code != 403:
                        escalations.append(where)
                    continue
                if r.status_code in (401, 403):
                    denied_wrongly.append(where + f" {r.json}")
    assert calls >= 8 * 20
    assert server_errors == []
    assert cross_site_successes == []
    assert leaks == []
    assert escalations == []
    assert denied_wrongly == []
