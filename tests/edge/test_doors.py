"""The door monitor on its own: debounce, grants, forced/held open, unlock failed."""

from __future__ import annotations

from smartlocker.edge_agent import CompartmentConfig
from smartlocker.edge_agent.doors import (
    AlarmChange,
    Closed,
    DoorMonitor,
    Grant,
    GrantResolved,
    Opened,
)

COMP = CompartmentConfig(
    id="a1", lock_pin=5, door_pin=6, debounce_ms=50, open_window_s=10, held_open_s=60
)


def monitor() -> DoorMonitor:
    m = DoorMonitor([COMP])
    m.start("a1", False, 0.0)
    return m


def test_bounces_shorter_than_the_debounce_are_ignored() -> None:
    m = monitor()
    for i in range(10):
        assert m.raw("a1", i % 2 == 0, 1.0 + i * 0.01) == []
        assert m.tick(1.0 + i * 0.01 + 0.005) == []
    assert m.is_open("a1") is False
    m.raw("a1", True, 2.0)
    assert m.tick(2.03) == []
    effects = m.tick(2.06)
    assert effects[0] == Opened("a1", False)
    assert m.is_open("a1") is True


def test_opening_without_a_grant_is_forced_and_cleared_on_close() -> None:
    m = monitor()
    m.raw("a1", True, 1.0)
    effects = m.tick(1.1)
    assert effects == [
        Opened("a1", False),
        AlarmChange("a1", effects[1].kind, True, "door opened without a grant"),
    ]
    assert effects[1].kind == "forced_open"
    m.raw("a1", False, 2.0)
    effects = m.tick(2.1)
    assert isinstance(effects[0], Closed)
    assert abs(effects[0].open_seconds - 1.0) < 1e-9
    assert [(e.kind, e.active) for e in effects[1:]] == [("forced_open", False)]


def test_granted_opening_resolves_the_grant_and_held_open_raises_then_clears() -> None:
    m = monitor()
    grant = Grant("a1", expires=11.0, command_id="c1")
    assert m.grant(grant, 1.0) == []
    m.raw("a1", True, 2.0)
    effects = m.tick(2.1)
    assert effects == [Opened("a1", True, (grant,)), GrantResolved(grant, True)]
    assert m.tick(60.0) == []
    (held,) = m.tick(62.2)
    assert (held.kind, held.active) == ("held_open", True)
    assert m.tick(70.0) == []  # raised once
    m.raw("a1", False, 80.0)
    effects = m.tick(80.1)
    assert [(e.kind, e.active) for e in effects[1:]] == [("held_open", False)]


def test_a_pulse_that_opens_nothing_is_reported_once() -> None:
    m = monitor()
    grant = Grant("a1", expires=11.0, command_id="c1")
    m.grant(grant, 1.0)
    assert m.tick(10.9) == []
    effects = m.tick(11.0)
    assert effects[0] == GrantResolved(grant, False)
    assert (effects[1].kind, effects[1].active) == ("unlock_failed", True)
    assert m.tick(20.0) == []
    # Opening later is not granted any more.
    m.raw("a1", True, 21.0)
    assert m.tick(21.1)[0] == Opened("a1", False)


def test_grant_while_the_door_is_open_resolves_at_once() -> None:
    m = DoorMonitor([COMP])
    m.start("a1", True, 0.0)
    grant = Grant("a1", expires=10.0, command_id="c2")
    assert m.grant(grant, 1.0) == [GrantResolved(grant, True)]
