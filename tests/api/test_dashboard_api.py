"""The dashboard's server side on a real database: the triggers' notes, the scoped
live stream, ``GET /me``, and what the API gained for the pages (a compartment's
parcel and since when, parcels by recipient, dwell time, compartment temperatures)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from flask import Flask

from smartlocker.cloud.dashboard import CHANNEL, feed_of
from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.rules.alerts import raise_alert
from smartlocker.cloud.rules.parcels import record_deposit
from smartlocker.protocol import utcnow

from .conftest import World, bearer


def notes_of(url: str, action: Callable[[], None]) -> list[dict[str, Any]]:
    """The dashboard notes PostgreSQL sends while ``action`` runs."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        action()
        return [json.loads(n.payload) for n in conn.notifies(timeout=0.5, stop_after=50)]


def test_every_change_the_pages_show_is_announced_with_its_site(world: World) -> None:
    c = world.client
    reserved: dict[str, Any] = {}

    def reserve() -> None:
        r = c.post(
            "/api/v1/parcels", json={"size": "s", "cabinet": "cab-1"}, headers=world.as_admin()
        )
        reserved.update(r.json)

    got = notes_of(world.url, reserve)
    assert {
        "kind": "parcel",
        "site": "s1",
        "cabinet": "cab-1",
        "id": reserved["id"],
        "state": "reserved",
    } in got
    assert {
        "kind": "compartment",
        "site": "s1",
        "cabinet": "cab-1",
        "compartments": [reserved["compartment"]],
    } in got

    def switch() -> None:
        c.patch(
            "/api/v1/cabinets/cab-2/compartments/A2",
            json={"enabled": False},
            headers=world.as_admin(),
        )

    assert notes_of(world.url, switch) == [
        {"kind": "compartment", "site": "s2", "cabinet": "cab-2", "compartments": ["A2"]}
    ]

    def alert_and_presence() -> None:
        with psycopg.connect(world.url) as conn:
            raise_alert(conn, "cab-2", "forced_open", now=utcnow(), compartment="A1")
            raise_alert(conn, "cab-2", "forced_open", now=utcnow(), compartment="A1")  # a repeat
            conn.execute("UPDATE cabinets SET online = true WHERE id = 'cab-1'")
            conn.execute("INSERT INTO ingest_cursors (cabinet) VALUES ('cab-1')")

    got = notes_of(world.url, alert_and_presence)
    kinds = [(n["kind"], n["site"]) for n in got]
    assert kinds.count(("alert", "s2")) == 1  # a repeat of an open alert is not news
    assert ("presence", "s1") in kinds
    assert ("events", "s1") in kinds
    # Temperature readings and last_seen move often and are not announced.
    assert notes_of(world.url, lambda: _touch(world.url)) == []


def _touch(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE compartments SET temperature_c = 4.0, temperature_at = now()")
        conn.execute("UPDATE cabinets SET last_seen = now()")


class StreamReader:
    """One ``/dashboard/stream`` response of the test client, read as it comes (the
    short heartbeat makes each read return soon even when nothing happens)."""

    def __init__(self, app: Flask, key: str | None) -> None:
        headers = bearer(key) if key else {}
        self.response = app.test_client().get("/dashboard/stream", headers=headers, buffered=False)
        self._chunks = iter(self.response.response)
        self._pending: list[tuple[str, dict[str, Any]]] = []

    def until(self, kind: str, timeout: float = 5.0) -> list[tuple[str, dict[str, Any]]]:
        """Every event up to the first of ``kind`` (or fail)."""
        seen: list[tuple[str, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._pending:
                chunk = next(self._chunks)
                text = chunk.decode() if isinstance(chunk, bytes) else chunk
                for block in text.split("\n\n"):
                    fields = dict(
                        line.split(": ", 1)
                        for line in block.splitlines()
                        if line.startswith(("event: ", "data: "))
                    )
                    if "event" in fields:
                        self._pending.append((fields["event"], json.loads(fields["data"])))
                continue
            event = self._pending.pop(0)
            seen.append(event)
            if event[0] == kind:
                return seen
        raise AssertionError(f"no {kind} event in {timeout}s: {seen}")

    def close(self) -> None:
        self.response.close()


@pytest.fixture
def streams(app: Flask) -> Iterator[Callable[[str | None], StreamReader]]:
    feed_of(app).heartbeat = 0.2
    opened: list[StreamReader] = []

    def open_stream(key: str | None) -> StreamReader:
        reader = StreamReader(app, key)
        opened.append(reader)
        return reader

    try:
        yield open_stream
    finally:
        for reader in opened:
            reader.close()


def test_the_stream_carries_only_the_sites_of_its_key(
    world: World, streams: Callable[[str | None], StreamReader]
) -> None:
    s2 = streams(world.keys[("viewer", "s2")])
    everyone = streams(world.admin)
    assert s2.until("hello")[-1][1] == {"role": "viewer", "sites": ["s2"]}
    everyone.until("hello")
    c = world.client
    c.post("/api/v1/parcels", json={"size": "s", "cabinet": "cab-1"}, headers=world.as_admin())
    c.post("/api/v1/parcels", json={"size": "m", "cabinet": "cab-2"}, headers=world.as_admin())
    seen = everyone.until("parcel") + everyone.until("parcel")
    assert {e[1]["site"] for e in seen if e[0] == "parcel"} == {"s1", "s2"}
    mine = s2.until("parcel")
    mine += s2.until("compartment")
    c.patch(
        "/api/v1/cabinets/cab-1/compartments/A3", json={"enabled": False}, headers=world.as_admin()
    )
    c.patch(
        "/api/v1/cabinets/cab-2/compartments/A3", json={"enabled": False}, headers=world.as_admin()
    )
    mine += s2.until("compartment")
    notes = [data for kind, data in mine if kind not in ("hello",)]
    assert notes
    assert {n["site"] for n in notes} == {"s2"}, notes
    assert [n["compartments"] for n in notes if n["kind"] == "compartment"][-1] == ["A3"]


def test_the_stream_needs_a_key_and_a_free_place(
    world: World, make_app: Callable[..., Flask]
) -> None:
    app = make_app(pool_min=1, pool_max=4, dashboard_streams=1)
    assert StreamReader(app, None).response.status_code == 401
    first = StreamReader(app, world.admin)
    assert first.response.status_code == 200
    first.until("hello")
    refused = StreamReader(app, world.admin)
    assert refused.response.status_code == 503
    assert refused.response.json["type"].endswith("/too-many-streams")
    first.close()
    again = StreamReader(app, world.keys[("viewer", "s1")])
    assert again.response.status_code == 200
    again.close()


@pytest.mark.parametrize(
    ("role", "may"),
    [
        ("admin", ["read", "parcels", "operate", "admin"]),
        ("operator", ["read", "parcels", "operate"]),
        ("courier", ["read", "parcels"]),
        ("viewer", ["read"]),
    ],
)
def test_me_says_who_the_key_is(world: World, role: str, may: list[str]) -> None:
    r = world.client.get("/api/v1/me", headers=world.key(role, "s2"))
    assert r.status_code == 200
    assert r.json["role"] == role
    assert r.json["sites"] == ["s2"]
    assert r.json["may"] == may
    assert r.json["name"] == f"{role}@s2"
    assert world.client.get("/api/v1/me", headers=world.as_admin()).json["sites"] is None
    assert world.client.get("/api/v1/me").status_code == 401


def test_pages_data_parcel_in_compartment_recipient_search_dwell_and_temperatures(
    world: World, cloud_keys: CloudKeys
) -> None:
    c = world.client
    parcel = c.post(
        "/api/v1/parcels",
        json={"size": "s", "cabinet": "cab-1", "recipient": "ana@example.org"},
        headers=world.as_admin(),
    ).json
    c.post(
        "/api/v1/parcels",
        json={"size": "s", "cabinet": "cab-2", "recipient": "bo@example.org"},
        headers=world.as_admin(),
    )
    deposited_at = utcnow() - timedelta(hours=2)
    with psycopg.connect(world.url) as conn:
        record_deposit(conn, cloud_keys, parcel["id"], now=deposited_at, actor="test")
        conn.execute(
            "INSERT INTO telemetry (cabinet, ts, id, uptime_s, outbox_depth, compartment_temps)"
            " VALUES ('cab-1', now(), 't1', 1, 0, '{\"A1\": 4.0}'),"
            " ('cab-1', now(), 't2', 2, 0, '{\"A1\": 6.0}')"
        )
    detail = c.get("/api/v1/cabinets/cab-1", headers=world.as_admin()).json
    comp = next(x for x in detail["compartments"] if x["id"] == parcel["compartment"])
    assert comp["parcel"] == parcel["id"]
    assert comp["occupied_since"] is not None
    assert comp["occupancy"] == "occupied"
    others = [x for x in detail["compartments"] if x["id"] != parcel["compartment"]]
    assert all(x["parcel"] is None and x["occupied_since"] is None for x in others)
    # Recipient search, scoped: s2's viewer does not find s1's recipient.
    found = c.get("/api/v1/parcels?recipient=ana@example.org", headers=world.as_admin()).json
    assert [p["id"] for p in found["items"]] == [parcel["id"]]
    hidden = c.get("/api/v1/parcels?recipient=ana@example.org", headers=world.key("viewer", "s2"))
    assert hidden.json["items"] == []
    # Dwell: two hours inside at the end of the window.
    stats = c.get("/api/v1/stats/occupancy?cabinet=cab-1&bucket=1h", headers=world.as_admin()).json
    last = stats["items"][-1]
    assert last["occupied"] == 1
    assert 2 * 3600 - 60 < last["dwell_max_s"] < 2 * 3600 + 60
    assert last["dwell_avg_s"] == pytest.approx(last["dwell_max_s"])
    empty = [p for p in stats["items"] if p["occupied"] == 0]
    assert empty
    assert all(p["dwell_avg_s"] is None for p in empty)
    series = c.get("/api/v1/cabinets/cab-1/telemetry?bucket=1h", headers=world.as_admin()).json
    assert series["items"][-1]["compartment_temps_c"] == {"A1": 5.0}
