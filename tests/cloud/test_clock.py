"""A cabinet's wrong clock: measured on its heartbeats, a ``fault`` alert while wrong,
cleared when right; queued readings replayed after an outage raise nothing; events of
a cabinet whose clock is known wrong get our time."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest

from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.reactions import Reactions
from smartlocker.cloud.rules import ClockPolicy, check_clock, clock_correction, reserve_parcel
from smartlocker.protocol import (
    CompartmentReport,
    DoorClosed,
    DoorOpened,
    DoorState,
    Reported,
    Telemetry,
    Unlocked,
    UnlockSource,
)
from tests.cloud.conftest import T0

Conn = psycopg.Connection[tuple[object, ...]]
POLICY = ClockPolicy(limit=timedelta(seconds=20), confirm=timedelta(seconds=5))


def faults(conn: Conn) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT detail, cleared_at IS NULL FROM alerts WHERE kind = 'fault' ORDER BY id"
    ).fetchall()


def beat(at: datetime) -> Telemetry:
    return Telemetry(cabinet="cab-1", ts=at, uptime_s=1.0, outbox_depth=0)


@pytest.fixture
def reactions(keys: CloudKeys) -> Reactions:
    return Reactions(keys, clock=POLICY)


def test_a_clock_within_the_limit_raises_nothing(conn: Conn) -> None:
    for skew in (0, 19, -19):
        now = T0 + timedelta(minutes=skew + 30)
        check = check_clock(
            conn, "cab-1", sent=now + timedelta(seconds=skew), now=now, policy=POLICY
        )
        assert check is not None
        assert check.skew_s == skew
        assert check.raised is None
    assert faults(conn) == []
    assert check_clock(conn, "nope", sent=T0, now=T0, policy=POLICY) is None


def test_a_clock_ahead_is_a_fault_at_once_and_cleared_when_right(conn: Conn) -> None:
    check = check_clock(conn, "cab-1", sent=T0 + timedelta(seconds=95), now=T0, policy=POLICY)
    assert check is not None
    assert check.raised is not None
    assert faults(conn) == [("clock skew +95 s (ahead; limit 20 s)", True)]
    row = conn.execute("SELECT clock_skew_s FROM cabinets WHERE id = 'cab-1'").fetchone()
    assert row == (95.0,)
    # Still wrong: the same alert, bumped (with the latest skew), not a second one.
    later = T0 + timedelta(seconds=60)
    again = check_clock(conn, "cab-1", sent=later + timedelta(seconds=96), now=later, policy=POLICY)
    assert again is not None
    assert again.raised is None
    assert len(faults(conn)) == 1
    # Right again: cleared.
    fixed = T0 + timedelta(seconds=120)
    done = check_clock(conn, "cab-1", sent=fixed, now=fixed, policy=POLICY)
    assert done is not None
    assert done.cleared == check.raised
    assert faults(conn) == [("clock skew +96 s (ahead; limit 20 s)", False)]  # the latest


def test_a_clock_behind_needs_a_second_message_received_apart(conn: Conn) -> None:
    def at(seconds: float, skew: float) -> object:
        now = T0 + timedelta(seconds=seconds)
        check = check_clock(
            conn, "cab-1", sent=now + timedelta(seconds=skew), now=now, policy=POLICY
        )
        assert check is not None
        return check.raised

    assert at(0, -60) is None  # maybe a queued reading
    assert at(1, -59) is None  # the same burst
    assert faults(conn) == []
    assert at(10, -60) is not None  # the next heartbeat agrees: the clock is behind
    assert faults(conn) == [("clock skew -60 s (behind; limit 20 s)", True)]


def test_queued_readings_replayed_after_an_outage_raise_nothing(
    conn: Conn, reactions: Reactions
) -> None:
    # Ten minutes offline: the readings queued meanwhile arrive with the fresh one.
    back = T0 + timedelta(minutes=10)
    queued = [beat(T0 + timedelta(minutes=m)) for m in range(1, 10)]
    effects = reactions.on_telemetry(conn, [*queued, beat(back - timedelta(seconds=1))], back)
    assert effects.alerts_raised == []
    # Readings queued in a batch of their own (split by ingest): only suspicion...
    effects = reactions.on_telemetry(conn, queued[:3], back + timedelta(seconds=1))
    assert effects.alerts_raised == []
    # ...dropped by the next fresh heartbeat.
    later = back + timedelta(seconds=60)
    reactions.on_telemetry(conn, [beat(later)], later)
    effects = reactions.on_telemetry(conn, queued[:3], later + timedelta(seconds=60))
    assert effects.alerts_raised == []
    assert faults(conn) == []


def test_reported_and_telemetry_of_a_slow_clock_raise_and_clear(
    conn: Conn, reactions: Reactions
) -> None:
    def reported(at: datetime) -> Reported:
        door = CompartmentReport(id="A1", door=DoorState.CLOSED, enabled=True)
        return Reported(cabinet="cab-1", ts=at, desired_version=0, compartments=[door])

    slow = timedelta(seconds=-90)
    assert reactions.on_reported(conn, reported(T0 + slow), T0).alerts_raised == []
    raised = reactions.on_telemetry(
        conn, [beat(T0 + timedelta(seconds=10) + slow)], T0 + timedelta(seconds=10)
    ).alerts_raised
    assert len(raised) == 1
    cleared = reactions.on_telemetry(
        conn, [beat(T0 + timedelta(seconds=20))], T0 + timedelta(seconds=20)
    ).alerts_cleared
    assert cleared == raised


def test_events_of_a_cabinet_whose_clock_is_wrong_get_our_time(
    conn: Conn, keys: CloudKeys, reactions: Reactions
) -> None:
    """A clock 2 h behind would date the deposit before the reservation; corrected, it
    is dated when it happened (and never later than its receipt)."""
    r = reserve_parcel(conn, keys, size="s", cabinet="cab-1", actor="api", now=T0)
    assert clock_correction(conn, "cab-1") == timedelta(0)
    slow = timedelta(hours=-2)
    for s in (0, 10):
        now = T0 + timedelta(seconds=s)
        reactions.on_telemetry(conn, [beat(now + slow)], now)
    assert clock_correction(conn, "cab-1") == slow
    t = T0 + timedelta(seconds=30)  # the deposit, in our time
    common = {"cabinet": "cab-1", "ts": t + slow}
    events = [
        Unlocked(
            **common,
            seq=1,
            compartment=r.compartment,
            source=UnlockSource.DEPOSIT_CODE,
            parcel=r.parcel,
            pulse_ms=300,
        ),
        DoorOpened(**common, seq=2, compartment=r.compartment, granted=True),
        DoorClosed(**common, seq=3, compartment=r.compartment, open_seconds=3.0),
    ]
    effects = reactions.on_events(conn, events, t + timedelta(seconds=2))
    assert [tr.to_state for tr in effects.transitions] == ["deposited"]
    row = conn.execute(
        "SELECT deposited_at, reserved_at FROM parcels WHERE id = %s", (r.parcel,)
    ).fetchone()
    assert row is not None
    assert row[0] == t
    assert row[0] > row[1]
