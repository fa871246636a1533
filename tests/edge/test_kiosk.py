"""The kiosk: codes open compartments online and offline; wrong codes are throttled."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from smartlocker.protocol import CodeGrant, CodeKind, generate_code, hash_code
from tests.edge.conftest import DOOR_PINS, code_key, lock_rises


def post_code(url: str, code: object) -> tuple[int, dict]:
    request = urllib.request.Request(
        url + "/kiosk/code",
        data=json.dumps({"code": code}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def grant(code: str, compartment: str, kind: str = "pickup", hours: float = 1.0, parcel="p-1"):
    return CodeGrant(
        hash=hash_code(code_key(), code),
        compartment=compartment,
        kind=CodeKind(kind),
        parcel=parcel,
        valid_until=datetime.now(UTC) + timedelta(hours=hours),
    )


def test_keypad_page_is_served(mqtt_broker, make_config, agents) -> None:
    agent = agents(make_config(mqtt_broker.url))
    assert agent.kiosk is not None
    with urllib.request.urlopen(agent.kiosk.url + "/", timeout=5) as response:
        page = response.read().decode()
        assert response.headers["Content-Type"].startswith("text/html")
    assert "/kiosk/code" in page
    assert "viewport" in page
    deadline = time.monotonic() + 5
    while not (agent.link is not None and agent.link.connected) and time.monotonic() < deadline:
        time.sleep(0.01)
    with urllib.request.urlopen(agent.kiosk.url + "/kiosk/status", timeout=5) as response:
        assert json.loads(response.read())["online"] is True


def test_codes_work_offline_and_events_arrive_when_the_broker_returns(
    fresh_broker, make_config, agents, make_cloud, mock_factory
) -> None:
    pickup, deposit, expired = generate_code(), generate_code(), generate_code()
    cloud = make_cloud(fresh_broker.host, fresh_broker.port, strict=False)
    agent = agents(make_config(fresh_broker.url))
    cloud.wait_event("boot")
    state = cloud.desired_state(
        1,
        codes=[
            grant(pickup, "a1", parcel="parcel-1"),
            grant(deposit, "a2", kind="deposit", parcel="parcel-2"),
            grant(expired, "a3", hours=-1, parcel="parcel-3"),
        ],
    )
    cloud.send(state, retain=True)
    cloud.wait(lambda: any(r.desired_version == 1 for r in cloud.reported), what="reported v1")
    fresh_broker.stop()
    assert agent.kiosk is not None
    url = agent.kiosk.url
    status, body = post_code(url, pickup[:4] + " " + pickup[4:])  # people type spaces
    assert (status, body["ok"], body["compartment"]) == (200, True, "a1")
    status, body = post_code(url, deposit)
    assert (status, body["compartment"], body["kind"]) == (200, "a2", "deposit")
    status, body = post_code(url, expired)
    assert (status, body["reason"]) == (403, "expired")
    status, body = post_code(url, pickup)  # single use
    assert (status, body["reason"]) == (403, "unknown")
    assert lock_rises(mock_factory, "a1") == 1
    assert lock_rises(mock_factory, "a2") == 1
    assert lock_rises(mock_factory, "a3") == 0
    mock_factory.pin(DOOR_PINS["a1"]).drive_high()
    fresh_broker.start()
    accepted = cloud.wait_event("code_accepted", count=2, timeout=15)
    assert {(e.compartment, e.kind, e.parcel) for e in accepted} == {
        ("a1", "pickup", "parcel-1"),
        ("a2", "deposit", "parcel-2"),
    }
    assert accepted[0].code_hash == hash_code(code_key(), pickup)
    unlocked = cloud.wait_event("unlocked", count=2)
    assert {(e.source, e.parcel) for e in unlocked} == {
        ("pickup_code", "parcel-1"),
        ("deposit_code", "parcel-2"),
    }
    (opened,) = cloud.wait_event("door_opened", compartment="a1")
    assert opened.granted is True
    rejected = cloud.wait_event("code_rejected", count=2)
    assert [e.reason for e in rejected] == ["expired", "unknown"]


def test_a_burst_of_wrong_codes_gets_only_the_free_tries_through(
    mqtt_broker, make_config, agents, make_cloud, mock_factory
) -> None:
    free = 3
    config = make_config(
        mqtt_broker.url,
        throttle={"free_attempts": free, "lockout_s": 60.0, "max_lockout_s": 600.0},
    )
    cloud = make_cloud(mqtt_broker.host, mqtt_broker.port)
    agent = agents(config)
    cloud.wait_event("boot")
    assert agent.kiosk is not None
    url = agent.kiosk.url
    results: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def guess(i: int) -> None:
        result = post_code(url, f"{i:08d}")
        with lock:
            results.append(result)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(guess, range(1000)))
    assert len(results) == 1000
    checked = [body for status, body in results if body["reason"] != "throttled"]
    throttled = [body for status, body in results if status == 429]
    assert len(checked) <= free
    assert len(throttled) >= 1000 - free
    assert all("locked_until" in body for body in throttled)
    # Events: one per checked guess, and one (not a thousand) for the lockout.
    rejected = cloud.wait_event("code_rejected", count=free)
    cloud.wait(lambda: len(cloud.events_of("code_rejected")) >= free, what="rejections")
    reasons = [e.reason for e in cloud.events_of("code_rejected")]
    assert reasons.count("unknown") == len(checked)
    assert reasons.count("throttled") <= 1
    assert rejected[free - 1].locked_until is not None
    # The lockout survives a restart of the agent (it is in the database).
    agent.stop("restart")
    agent = agents(config)
    assert agent.kiosk is not None
    status, body = post_code(agent.kiosk.url, "12345678")
    assert (status, body["reason"]) == (429, "throttled")
    assert sum(lock_rises(mock_factory, c) for c in ("a1", "a2", "a3")) == 0
