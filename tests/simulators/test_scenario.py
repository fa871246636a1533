"""A compressed day on five virtual cabinets, then faults on a sixth: everything the
cabinets produce reaches the database, every parcel ends where its people took it,
no alarm goes unexplained, and each injected fault shows up as its alarm or failure."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from smartlocker.simulators.scenario import Scenario, ScenarioConfig
from smartlocker.simulators.stack import Stack


def _wait(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


@pytest.fixture(params=["mosquitto", "python"])
def stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """The whole stack, once on Mosquitto and once on the in-process Python broker."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))  # pgserver's lock
    s = Stack(tmp_path / "stack", open_window_s=2.0, held_open_s=2.0, broker_kind=request.param)
    s.start()
    try:
        s.provision("day", "Day station", 5)
        s.provision("faults", "Faulty station", 1)
        yield s
    finally:
        s.stop()


def test_a_day_on_five_cabinets_then_faults(stack: Stack) -> None:
    api, inbox = stack.api, stack.inbox
    assert api is not None
    assert inbox is not None
    config = ScenarioConfig(
        site="day", day_s=20, days=1, parcels_per_day=24, hold_days=0.5, settle_s=60, seed=7
    )
    kiosks = {c.id: c.kiosk_url for c in stack.cabinets if c.id.startswith("day-")}
    summary = Scenario(config, api, kiosks, inbox).run()
    assert summary.failures == {}, summary.lines()
    assert summary.unexpected == [], summary.lines()
    assert summary.parcels["picked_up"] >= 10, summary.lines()
    assert summary.parcels["returned"] >= 1, summary.lines()  # the forgetful ones went back
    assert summary.messages["code_issued"] >= 10
    day_alerts = api.paginate("/api/v1/alerts", site="day", limit=200)
    assert day_alerts == []  # no unexplained alarm

    cabinet = stack.cabinet("faults-01")
    world = cabinet.world

    def alerts() -> set[str]:
        return {a["kind"] for a in api.paginate("/api/v1/alerts", site="faults", limit=200)}

    # A jammed lock: the door does not open; the command fails and says why.
    world.jam("B1")
    command = api.post(
        "/api/v1/cabinets/faults-01/compartments/B1/unlock",
        {"reason": "test a jammed lock"},
        wait=10,
    )
    assert (command["status"], command["outcome"]) == ("failed", "not_opened")
    _wait("the unlock_failed alarm", lambda: "unlock_failed" in alerts())
    world.jam("B1", False)
    # A door forced open without any grant.
    world.force_open("A2")
    _wait("the forced_open alarm", lambda: "forced_open" in alerts())
    # A door left open after a pickup: held open, then cleared when closed.
    world.leave_open("A1")
    command = api.post(
        "/api/v1/cabinets/faults-01/compartments/A1/unlock",
        {"reason": "test a door left open"},
        wait=10,
    )
    assert command["status"] == "succeeded"
    _wait("the held_open alarm", lambda: "held_open" in alerts())
    world.close("A1")
    # The network drops: the cabinet keeps its events until the broker is back.
    assert stack.broker is not None
    stack.broker.stop()
    world.force_open("A3")
    time.sleep(1.0)
    stack.broker.start()
    _wait(
        "the forced_open alarm of A3",
        lambda: any(
            a["compartment"] == "A3" and a["kind"] == "forced_open"
            for a in api.paginate("/api/v1/alerts", site="faults", limit=200)
        ),
        timeout=40,
    )
    # Nothing lost: every event any cabinet numbered is in the database, once.
    assert stack.wait_drained(30), (stack.events_produced(), stack.events_stored())
    assert stack.events_produced() == stack.events_stored()
