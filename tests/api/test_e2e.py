"""End to end: the API under gunicorn (2 workers), a private Mosquitto with passwords
and ACL, ingest with the real rules, PostgreSQL, and the real edge agent on mock pins.

* courier reserves → deposit opens → door closes → pickup code issued → the code at
  the kiosk opens → door closes → picked up;
* the same with the pickup through the app (``POST /parcels/{id}/pickup``);
* expiry → return;
* remote unlock with ``?wait`` answered by whichever worker, woken by NOTIFY;
* many concurrent unlocks of one cabinet, across both workers, all opened (the
  cabinet's replay window takes their counters in whatever order they arrive).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from smartlocker.cloud.api.auth import Role
from smartlocker.cloud.db import migrate
from smartlocker.cloud.keys import CloudKeys
from smartlocker.embedded import MosquittoBroker
from smartlocker.protocol import utcnow
from tests.support.outbox import queued_codes
from tests.support.pg import PgCluster

from .conftest import make_key
from .stack import (
    CLOUD_USER,
    Cabinet,
    ServedApi,
    serve_api,
    signing_key_file,
    start_broker,
    start_cabinet,
    start_ingest,
    wait_for,
)


@dataclass
class Stack:
    url: str
    api: ServedApi
    broker: MosquittoBroker
    cabinet: Cabinet
    keys: CloudKeys
    admin: str
    courier: str
    operator: str

    def parcel(self, parcel: str) -> dict[str, Any]:
        r = self.api.call("GET", f"/api/v1/parcels/{parcel}", self.operator)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_state(self, parcel: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        return wait_for(
            lambda: (p := self.parcel(parcel))["state"] == state and p,
            timeout,
            f"parcel {parcel} to be {state}",
        )

    def pickup_code(self, parcel: str) -> str:
        """What the notification worker would deliver to the recipient."""
        with psycopg.connect(self.url) as conn:
            queued = queued_codes(conn, parcel)
        assert queued
        assert queued[-1].code is not None
        return queued[-1].code


@pytest.fixture(scope="module")
def e2e_db(pg_cluster: PgCluster) -> Iterator[str]:
    """One database per flavor for this module's tests (each test has its own parcels)."""
    url = pg_cluster.create_database()
    try:
        migrate(url)
        yield url
    finally:
        pg_cluster.drop_database(url)


@pytest.fixture(scope="module")
def stack(
    e2e_db: str, tmp_path_factory: pytest.TempPathFactory, cloud_keys: CloudKeys
) -> Iterator[Stack]:
    api_db = e2e_db
    tmp_path = tmp_path_factory.mktemp("e2e")
    broker, cloud_password, pid_file = start_broker(tmp_path / "broker")
    cloud_url = f"mqtt://{CLOUD_USER}:{cloud_password}@{broker.host}:{broker.port}"
    api = ingest = cabinet = None
    try:
        api = serve_api(
            tmp_path,
            database_url=api_db,
            mqtt_url=cloud_url,
            signing_key=signing_key_file(tmp_path, cloud_keys),
            broker=broker,
            pid_file=pid_file,
            workers=2,
        )
        ingest = start_ingest(cloud_url, api_db, cloud_keys)
        admin = make_key(api_db, Role.ADMIN, None, "admin")
        assert api.call("POST", "/api/v1/sites", admin, {"id": "s1", "name": "Station"}).ok
        provisioned = api.call(
            "POST",
            "/api/v1/cabinets",
            admin,
            {
                "id": "cab-e2e",
                "site": "s1",
                "compartments": [
                    {"id": "A1", "size": "s"},
                    {"id": "A2", "size": "m"},
                    {"id": "A3", "size": "l"},
                ],
            },
        )
        assert provisioned.status_code == 201, provisioned.text
        assert provisioned.json()["credentials"]["broker_registered"] is True
        cabinet = start_cabinet(tmp_path, provisioned.json(), broker)
        stack = Stack(
            url=api_db,
            api=api,
            broker=broker,
            cabinet=cabinet,
            keys=cloud_keys,
            admin=admin,
            courier=make_key(api_db, Role.COURIER, ["s1"], "courier"),
            operator=make_key(api_db, Role.OPERATOR, ["s1"], "operator"),
        )
        # the cabinet logged in with the provisioned password and applied its desired state
        wait_for(
            lambda: api.call("GET", "/api/v1/cabinets/cab-e2e", admin).json()["online"],
            10,
            "the cabinet to come online",
        )
        yield stack
    finally:
        if cabinet is not None:
            cabinet.stop()
        if ingest is not None:
            ingest.stop()
        if api is not None:
            api.stop()
        broker.stop()


def _reserve(s: Stack, **extra: Any) -> dict[str, Any]:
    body = {"size": "s", "site": "s1", "recipient": "+4915100000000", **extra}
    r = s.api.call("POST", "/api/v1/parcels", s.courier, body)
    assert r.status_code == 201, r.text
    return r.json()


def _deposit(s: Stack, parcel: str) -> None:
    r = s.api.call("POST", f"/api/v1/parcels/{parcel}/deposit", s.courier, wait=10)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded", r.json()
    s.wait_state(parcel, "deposited")


def test_courier_deposits_and_the_recipient_picks_up_at_the_kiosk(stack: Stack) -> None:
    reserved = _reserve(stack, recipient="ann@example.org")
    parcel = reserved["id"]
    _deposit(stack, parcel)
    code = stack.pickup_code(parcel)

    # the pickup code's hash reaches the cabinet in its signed desired state
    def kiosk() -> requests.Response | None:
        r = requests.post(stack.cabinet.kiosk + "/kiosk/code", json={"code": code}, timeout=5)
        return r if r.status_code == 200 else None

    answer = wait_for(kiosk, 10, "the kiosk to accept the pickup code")
    assert answer.json().get("compartment") == reserved["compartment"], answer.text
    done = stack.wait_state(parcel, "picked_up")
    assert [h["to_state"] for h in done["history"]] == ["reserved", "deposited", "picked_up"]


def test_recipient_picks_up_through_the_app(stack: Stack) -> None:
    parcel = _reserve(stack)["id"]
    _deposit(stack, parcel)
    wrong = stack.api.call(
        "POST", f"/api/v1/parcels/{parcel}/pickup", stack.courier, {"code": "00000000"}
    )
    assert wrong.status_code == 422
    assert wrong.json()["type"].endswith("/wrong-code")
    code = stack.pickup_code(parcel)
    r = stack.api.call(
        "POST", f"/api/v1/parcels/{parcel}/pickup", stack.courier, {"code": code}, wait=10
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    assert r.json()["purpose"] == "pickup"
    stack.wait_state(parcel, "picked_up")
    again = stack.api.call(
        "POST", f"/api/v1/parcels/{parcel}/pickup", stack.courier, {"code": code}
    )
    assert again.status_code == 409


def test_an_expired_parcel_is_returned(stack: Stack) -> None:
    parcel = _reserve(stack, deadline=(utcnow() + timedelta(seconds=2)).isoformat())["id"]
    _deposit(stack, parcel)
    too_early = stack.api.call("POST", f"/api/v1/parcels/{parcel}/return", stack.courier)
    assert too_early.status_code == 409
    # ingest's periodic sweep (the rules' on_tick) expires it once the deadline passed
    stack.wait_state(parcel, "expired", timeout=15)
    r = stack.api.call("POST", f"/api/v1/parcels/{parcel}/return", stack.courier, wait=10)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    done = stack.wait_state(parcel, "returned")
    assert [h["to_state"] for h in done["history"]][-2:] == ["expired", "returned"]


def test_remote_unlock_waits_for_the_ack_across_two_workers(stack: Stack) -> None:
    workers: set[str] = set()
    sent = 0
    door = stack.cabinet.world.doors["A3"]
    while len(workers) < 2 or sent < 6:
        assert sent < 40, f"only one worker ever answered: {workers}"
        # A person opens the door after each unlock and closes it a moment later;
        # the next unlock is for a closed door (a pulse cannot open an open door).
        wait_for(lambda: not door.is_open and door.close_at is None, 5, "A3 to close")
        r = stack.api.call(
            "POST",
            "/api/v1/cabinets/cab-e2e/compartments/A3/unlock",
            stack.operator,
            {"reason": "customer stuck at the door"},
            fresh=True,
            wait=10,
        )
        sent += 1
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "succeeded"
        assert body["outcome"] == "opened"
        got = stack.api.call("GET", f"/api/v1/commands/{body['id']}", stack.operator).json()
        assert got["status"] == "succeeded"
        workers.add(r.headers["X-Worker"])
    # without wait: 202 with the command as created and sent
    r = stack.api.call(
        "POST",
        "/api/v1/cabinets/cab-e2e/compartments/A3/unlock",
        stack.operator,
        {"reason": "check"},
    )
    assert r.status_code == 202
    assert r.json()["status"] in ("sent", "succeeded")
    trail = stack.api.call(
        "GET", "/api/v1/events", stack.operator, type="compartment.unlock.operator"
    )
    assert trail.status_code == 200, trail.text
    audit = trail.json()["items"]
    assert len(audit) == sent + 1
    assert audit[0]["actor"].startswith("apikey:")
    assert audit[0]["detail"]["reason"] == "check"


def test_audit_trail_telemetry_and_occupancy(stack: Stack) -> None:
    _deposit(stack, _reserve(stack)["id"])
    r = stack.api.call(
        "POST",
        "/api/v1/cabinets/cab-e2e/compartments/A3/unlock",
        stack.operator,
        {"reason": "inspection"},
        wait=10,
    )
    assert r.status_code == 200, r.text

    def door_events() -> list[dict[str, Any]]:
        page = stack.api.call(
            "GET",
            "/api/v1/events",
            stack.operator,
            cabinet="cab-e2e",
            compartment="A3",
            source="cabinet",
        ).json()
        return [e for e in page["items"] if e["type"] == "door_closed"]

    closed = wait_for(door_events, 10, "the door_closed event in the trail")
    assert closed[0]["site"] == "s1"
    readings = wait_for(
        lambda: stack.api.call(
            "GET", "/api/v1/cabinets/cab-e2e/telemetry", stack.operator, bucket="1m"
        ).json()["items"],
        10,
        "telemetry buckets",
    )
    assert sum(b["samples"] for b in readings) >= 1
    occupancy = stack.api.call(
        "GET",
        "/api/v1/stats/occupancy",
        stack.operator,
        cabinet="cab-e2e",
        bucket="1h",
        since=(utcnow() - timedelta(hours=2)).isoformat(),
    ).json()["items"]
    assert occupancy
    assert {p["compartments"] for p in occupancy} == {3}
    assert occupancy[-1]["occupied"] >= 1


#: Concurrent unlocks per round, each on a compartment of its own: fewer than the
#: API's 2 workers x 8 threads, so all of them are in flight at once.
BURST = 12


def test_concurrent_unlocks_of_one_cabinet_across_workers_all_open(
    stack: Stack, tmp_path: Path
) -> None:
    """Nothing orders one cabinet's commands between their commits and the cabinet
    (there is no per-cabinet lock in the API): they overtake each other, and the
    cabinet's replay window accepts each counter once. Not one may come back
    ``replayed``. (Last in this module: the trail test above counts every operator
    unlock of the database.)"""
    compartments = [f"B{i}" for i in range(BURST)]
    provisioned = stack.api.call(
        "POST",
        "/api/v1/cabinets",
        stack.admin,
        {
            "id": "cab-burst",
            "site": "s1",
            "compartments": [{"id": c, "size": "m"} for c in compartments],
        },
    )
    assert provisioned.status_code == 201, provisioned.text
    cabinet = start_cabinet(
        tmp_path,
        provisioned.json(),
        stack.broker,
        pins={c: (2 + i, 14 + i) for i, c in enumerate(compartments)},
        pulse_ms=300,  # twelve pins polled by a world thread that has to share the CPU
    )
    key = make_key(stack.url, Role.OPERATOR, ["s1"], "burst")
    answers: list[tuple[int, dict[str, Any], str]] = []
    lock = threading.Lock()
    try:
        wait_for(
            lambda: stack.api.call("GET", "/api/v1/cabinets/cab-burst", key).json()["online"],
            10,
            "cab-burst to come online",
        )
        for _round in range(4):
            # A pulse opens a closed door only: each round waits for every door to be
            # closed and every lock released (a running pulse is not started again).
            doors = cabinet.world.doors.values()
            wait_for(
                lambda: all(
                    not d.is_open and d.close_at is None and not d.was_energised for d in doors
                ),
                10,
                "every door to close and every lock to release",
            )
            start = threading.Barrier(BURST)

            def unlock(compartment: str) -> None:
                start.wait(10)
                r = stack.api.call(
                    "POST",
                    f"/api/v1/cabinets/cab-burst/compartments/{compartment}/unlock",
                    key,
                    {"reason": "burst"},
                    fresh=True,
                    wait=15,
                )
                with lock:
                    answers.append((r.status_code, r.json(), r.headers.get("X-Worker", "")))

            threads = [threading.Thread(target=unlock, args=(c,)) for c in compartments]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
    finally:
        cabinet.stop()
    assert len(answers) == 4 * BURST
    outcomes = [
        (code, body.get("status"), body.get("outcome"), body.get("outcome_reason"))
        for code, body, _ in answers
    ]
    assert outcomes == [(200, "succeeded", "opened", None)] * len(answers), outcomes
    assert len({worker for _, _, worker in answers}) == 2  # both workers sent commands
    with psycopg.connect(stack.url) as conn:
        counters = conn.execute(
            "SELECT count(DISTINCT counter), count(*) FILTER (WHERE outcome_reason = 'replayed')"
            " FROM commands WHERE cabinet = 'cab-burst'"
        ).fetchone()
    assert counters == (4 * BURST, 0)
