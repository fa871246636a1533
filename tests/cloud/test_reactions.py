"""What cabinet traffic means: events → parcel transitions, acks → commands, alerts, presence."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from smartlocker.cloud import reactions as reactions_module
from smartlocker.cloud.downlink import create_unlock_command
from smartlocker.cloud.errors import InvalidTransition, ValidationFailed
from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.notify import mark_sent
from smartlocker.cloud.reactions import Effects, Reactions
from smartlocker.cloud.rules import (
    FeePolicy,
    cancel_parcel,
    request_opening,
    reserve_parcel,
)
from smartlocker.cloud.rules.alerts import AlertKind, raise_alert
from smartlocker.cloud.rules.fleet import CompartmentSpec, create_cabinet, set_fee_policy
from smartlocker.cloud.rules.presence import mark_online
from smartlocker.protocol import (
    Ack,
    AckOutcome,
    Alarm,
    AlarmKind,
    CodeAccepted,
    CodeKind,
    DoorClosed,
    DoorOpened,
    Event,
    Reported,
    Status,
    Telemetry,
    Unlocked,
    UnlockSource,
    hash_code,
    private_key_pem,
)
from tests.cloud.conftest import T0
from tests.support.outbox import queued_codes
from tests.support.pgwire import PgWireTap

Conn = psycopg.Connection[tuple[object, ...]]


class Cabinet:
    """Makes the events of one cabinet with rising ``seq``."""

    def __init__(self, name: str = "cab-1") -> None:
        self.name = name
        self._seq = itertools.count(1)

    def _common(self, at: datetime) -> dict[str, Any]:
        return {"cabinet": self.name, "seq": next(self._seq), "ts": at}

    def unlocked(self, at: datetime, comp: str, source: UnlockSource, **kw: Any) -> Event:
        return Unlocked(**self._common(at), compartment=comp, source=source, pulse_ms=300, **kw)

    def accepted(self, at: datetime, comp: str, kind: CodeKind, parcel: str) -> Event:
        return CodeAccepted(
            **self._common(at), compartment=comp, kind=kind, parcel=parcel, code_hash="0" * 64
        )

    def opened(self, at: datetime, comp: str) -> Event:
        return DoorOpened(**self._common(at), compartment=comp, granted=True)

    def closed(self, at: datetime, comp: str) -> Event:
        return DoorClosed(**self._common(at), compartment=comp, open_seconds=5.0)

    def alarm(self, at: datetime, kind: AlarmKind, active: bool, comp: str | None = None) -> Event:
        return Alarm(**self._common(at), compartment=comp, kind=kind, active=active)


def state(conn: Conn, parcel: str) -> str:
    row = conn.execute("SELECT state FROM parcels WHERE id = %s", (parcel,)).fetchone()
    assert row is not None
    return str(row[0])


def occupancy(conn: Conn, comp: str) -> str:
    row = conn.execute(
        "SELECT occupancy FROM compartments WHERE cabinet = 'cab-1' AND id = %s", (comp,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def open_alerts(conn: Conn) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT compartment, kind, occurrences FROM alerts WHERE cleared_at IS NULL ORDER BY id"
    ).fetchall()


@pytest.fixture
def reactions(keys: CloudKeys) -> Reactions:
    return Reactions(keys)


def deposit(conn: Conn, reactions: Reactions, cab: Cabinet, parcel: str, comp: str) -> Effects:
    t = T0 + timedelta(minutes=10)
    return reactions.on_events(
        conn,
        [
            cab.unlocked(t, comp, UnlockSource.DEPOSIT_CODE, parcel=parcel),
            cab.opened(t, comp),
            cab.closed(t + timedelta(seconds=20), comp),
        ],
        t + timedelta(seconds=21),
    )


def test_deposit_then_pickup_with_the_code_from_the_outbox(
    conn: Conn, keys: CloudKeys, reactions: Reactions
) -> None:
    set_fee_policy(conn, "site-1", FeePolicy(free_hours=24, fee_per_unit=Decimal("1.50")))
    r = reserve_parcel(
        conn, keys, size="s", cabinet="cab-1", actor="api", recipient="+4912345", now=T0
    )
    cab = Cabinet()
    effects = deposit(conn, reactions, cab, r.parcel, r.compartment)
    assert [t.to_state for t in effects.transitions] == ["deposited"]
    assert effects.desired_changed == {"cab-1"}
    assert state(conn, r.parcel) == "deposited"
    assert occupancy(conn, "A1") == "occupied"

    # the pickup code waits in the outbox, in clear, only there
    (note,) = queued_codes(conn)
    assert note.id in effects.notifications
    assert note.destination == "+4912345"
    assert note.code is not None
    assert len(note.code) >= 8
    assert note.code.isdigit()
    stored = conn.execute(
        "SELECT hash, used_at FROM codes WHERE parcel = %s AND kind = 'pickup'", (r.parcel,)
    ).fetchone()
    assert stored == (hash_code(keys.code_key("cab-1"), note.code), None)
    mark_sent(conn, note.id, T0, None)
    assert conn.execute("SELECT secret_payload FROM outbound_messages").fetchone() == (None,)
    assert queued_codes(conn) == []

    t = T0 + timedelta(days=2, hours=1)  # 1 started day over the free 24 h after deposit
    effects = reactions.on_events(
        conn,
        [
            cab.accepted(t, "A1", CodeKind.PICKUP, r.parcel),
            cab.unlocked(t, "A1", UnlockSource.PICKUP_CODE, parcel=r.parcel),
            cab.opened(t, "A1"),
            cab.closed(t + timedelta(seconds=9), "A1"),
        ],
        t + timedelta(seconds=10),
    )
    assert [t.to_state for t in effects.transitions] == ["picked_up"]
    assert state(conn, r.parcel) == "picked_up"
    assert occupancy(conn, "A1") == "free"
    assert conn.execute(
        "SELECT count(*) FROM codes WHERE parcel = %s AND used_at IS NULL AND revoked_at IS NULL",
        (r.parcel,),
    ).fetchone() == (0,)
    assert conn.execute("SELECT fee FROM parcels WHERE id = %s", (r.parcel,)).fetchone() == (
        Decimal("3.00"),
    )
    history = conn.execute(
        "SELECT from_state, to_state, actor FROM parcel_history WHERE parcel = %s ORDER BY id",
        (r.parcel,),
    ).fetchall()
    assert history == [
        (None, "reserved", "api"),
        ("reserved", "deposited", "cabinet:cab-1"),
        ("deposited", "picked_up", "cabinet:cab-1"),
    ]


def test_no_transition_without_the_door_opening(
    conn: Conn, keys: CloudKeys, reactions: Reactions
) -> None:
    r = reserve_parcel(conn, keys, size="s", cabinet="cab-1", actor="api", now=T0)
    cab = Cabinet()
    effects = reactions.on_events(
        conn,
        [
            cab.unlocked(T0, "A1", UnlockSource.DEPOSIT_CODE, parcel=r.parcel),
            cab.closed(T0, "A1"),
        ],
        T0,
    )
    assert effects.transitions == []
    assert state(conn, r.parcel) == "reserved"


def test_a_grant_for_another_compartment_or_state_changes_nothing(
    conn: Conn, keys: CloudKeys, reactions: Reactions
) -> None:
    r = reserve_parcel(conn, keys, size="s", cabinet="cab-1", actor="api", now=T0)
    cab = Cabinet()
    # the parcel is in A1; a grant naming it on A2 is not believed
    assert not deposit(conn, reactions, cab, r.parcel, "A2").transitions
    # a pickup grant for a parcel that is only reserved is not a pickup
    effects = reactions.on_events(
        conn,
        [
            cab.accepted(T0, "A1", CodeKind.PICKUP, r.parcel),
            cab.opened(T0, "A1"),
            cab.closed(T0, "A1"),
        ],
        T0,
    )
    assert effects.transitions == []
    assert state(conn, r.parcel) == "reserved"
    # ... but the door's state is still recorded
    door = conn.execute(
        "SELECT door, grant_kind FROM compartments WHERE cabinet = 'cab-1' AND id = 'A1'"
    ).fetchone()
    assert door == ("closed", None)


def test_remote_openings_need_the_right_state(
    conn: Conn, keys: CloudKeys, reactions: Reactions
) -> None:
    r = reserve_parcel(conn, keys, size="s", cabinet="cab-1", actor="api", now=T0)
    with pytest.raises(InvalidTransition):
        request_opening(conn, r.parcel, "pickup", actor="app", now=T0)
    with pytest.raises(ValidationFailed):
        request_opening(conn, r.parcel, "smash", actor="app", now=T0)
    cmd = request_opening(conn, r.parcel, "deposit", actor="courier", now=T0)
    assert (cmd.purpose, cmd.parcel, cmd.compartment) == ("deposit", r.parcel, "A1")
    cab = Cabinet()
    effects = reactions.on_events(
        conn,
        [
            cab.unlocked(T0, "A1", UnlockSource.COMMAND, command_id=cmd.id),
            cab.opened(T0, "A1"),
            cab.closed(T0, "A1"),
        ],
        T0,
    )
    assert [t.to_state for t in effects.transitions] == ["deposited"]
    pickup = request_opening(conn, r.parcel, "pickup", actor="app", now=T0)
    assert pickup.counter == cmd.counter + 1


def test_deposit_and_return_through_commands(
    conn: Conn, keys: CloudKeys, reactions: Reactions
) -> None:
    r = reserve_parcel(conn, keys, size="l", cabinet="cab-1", actor="api", now=T0)
    cmd = create_unlock_command(
        conn, "cab-1", "C1", "deposit", "courier-7", now=T0, parcel=r.parcel, purpose="deposit"
    )
    cab = Cabinet()
    effects = reactions.on_events(
        conn,
        [
            cab.unlocked(T0, "C1", UnlockSource.COMMAND, command_id=cmd.id),
            cab.opened(T0, "C1"),
            cab.closed(T0 + timedelta(seconds=30), "C1"),
        ],
        T0 + timedelta(minutes=1),
    )
    assert [t.to_state for t in effects.transitions] == ["deposited"]
    deadline = conn.execute("SELECT deadline FROM parcels WHERE id = %s", (r.parcel,)).fetchone()
    assert deadline == (T0 + timedelta(seconds=30) + timedelta(hours=72),)

    late = T0 + timedelta(days=4)
    tick = reactions.on_tick(conn, late)
    assert [t.to_state for t in tick.transitions] == ["expired"]
    assert tick.desired_changed == {"cab-1"}
    assert conn.execute(
        "SELECT revoked_reason FROM codes WHERE parcel = %s AND kind = 'pickup'", (r.parcel,)
    ).fetchone() == ("expired",)
    assert occupancy(conn, "C1") == "occupied"

    back = create_unlock_command(
        conn, "cab-1", "C1", "return", "courier-7", now=late, parcel=r.parcel, purpose="return"
    )
    effects = reactions.on_events(
        conn,
        [
            cab.unlocked(late, "C1", UnlockSource.COMMAND, command_id=back.id),
            cab.opened(late, "C1"),
            cab.closed(late, "C1"),
        ],
        late,
    )
    assert [t.to_state for t in effects.transitions] == ["returned"]
    assert occupancy(conn, "C1") == "free"


def test_an_operator_unlock_moves_no_parcel(
    conn: Conn, keys: CloudKeys, reactions: Reactions
) -> None:
    r = reserve_parcel(conn, keys, size="s", cabinet="cab-1", actor="api", now=T0)
    cmd = create_unlock_command(conn, "cab-1", "A1", "inspection", "op", now=T0)
    cab = Cabinet()
    effects = reactions.on_events(
        conn,
        [
            cab.unlocked(T0, "A1", UnlockSource.COMMAND, command_id=cmd.id),
            cab.opened(T0, "A1"),
            cab.closed(T0, "A1"),
        ],
        T0,
    )
    assert not effects.transitions
    assert state(conn, r.parcel) == "reserved"
    door = conn.execute(
        "SELECT door, lock FROM compartments WHERE cabinet = 'cab-1' AND id = 'A1'"
    ).fetchone()
    assert door == ("closed", "locked")


def test_events_of_an_unknown_cabinet_are_skipped(conn: Conn, reactions: Reactions) -> None:
    ghost = Cabinet("ghost")
    effects = reactions.on_events(conn, [ghost.opened(T0, "A1"), ghost.closed(T0, "A1")], T0)
    assert not effects


def test_alarms_raise_and_clear_one_alert_per_kind(conn: Conn, reactions: Reactions) -> None:
    cab = Cabinet()
    first = reactions.on_events(conn, [cab.alarm(T0, AlarmKind.FORCED_OPEN, True, "A2")], T0)
    again = reactions.on_events(conn, [cab.alarm(T0, AlarmKind.FORCED_OPEN, True, "A2")], T0)
    assert len(first.alerts_raised) == 1
    assert again.alerts_raised == []
    reactions.on_events(conn, [cab.alarm(T0, AlarmKind.HELD_OPEN, True, "A2")], T0)
    assert open_alerts(conn) == [("A2", "forced_open", 2), ("A2", "held_open", 1)]
    # the door closing ends "held open"; the cabinet clears "forced open" itself
    reactions.on_events(conn, [cab.closed(T0, "A2")], T0)
    assert open_alerts(conn) == [("A2", "forced_open", 2)]
    cleared = reactions.on_events(conn, [cab.alarm(T0, AlarmKind.FORCED_OPEN, False, "A2")], T0)
    assert len(cleared.alerts_cleared) == 1
    assert open_alerts(conn) == []


ACK_CASES = [
    ("A1", AckOutcome.OPENED, "succeeded", None),
    ("A2", AckOutcome.NOT_OPENED, "failed", "unlock_failed"),  # the door did not open
    ("B1", AckOutcome.FAILED, "failed", "command_failed"),
    ("C1", AckOutcome.REJECTED, "rejected", None),
]


def test_acks_move_commands_on(conn: Conn, reactions: Reactions) -> None:
    for comp, outcome, status, alert in ACK_CASES:
        cmd = create_unlock_command(conn, "cab-1", comp, "test", "op", now=T0)
        # another cabinet cannot answer for this one
        forged = Ack(cabinet="cab-2", command_id=cmd.id, outcome=AckOutcome.OPENED, ts=T0)
        reactions.on_ack(conn, forged, T0)
        ack = Ack(cabinet="cab-1", command_id=cmd.id, compartment=comp, outcome=outcome, ts=T0)
        reactions.on_ack(conn, ack, T0 + timedelta(seconds=1))
        row = conn.execute("SELECT status, outcome FROM commands WHERE id = %s", (cmd.id,))
        assert row.fetchone() == (status, outcome.value)
        # a duplicate ack changes nothing
        reactions.on_ack(conn, ack, T0 + timedelta(seconds=2))
    alerts = [(c, kind, n) for c, kind, n in open_alerts(conn)]
    assert alerts == [(c, a, 1) for c, _, _, a in ACK_CASES if a is not None]


def test_commands_time_out_and_a_late_ack_still_counts(conn: Conn, reactions: Reactions) -> None:
    cmd = create_unlock_command(conn, "cab-1", "B1", "test", "op", now=T0)
    tick = reactions.on_tick(conn, T0 + timedelta(seconds=31))
    assert tick.alerts_raised
    row = conn.execute("SELECT status FROM commands WHERE id = %s", (cmd.id,)).fetchone()
    assert row == ("timed_out",)
    ack = Ack(cabinet="cab-1", command_id=cmd.id, outcome=AckOutcome.OPENED, ts=T0)
    effects = reactions.on_ack(conn, ack, T0 + timedelta(seconds=40))
    assert conn.execute("SELECT status FROM commands WHERE id = %s", (cmd.id,)).fetchone() == (
        "succeeded",
    )
    assert effects.alerts_cleared
    assert open_alerts(conn) == []


def test_counters_rise_per_cabinet(conn: Conn) -> None:
    counters = [
        create_unlock_command(conn, "cab-1", "A1", None, "op", now=T0).counter for _ in range(3)
    ]
    assert counters == [1, 2, 3]


def test_presence_birth_will_silence_and_traffic(conn: Conn, reactions: Reactions) -> None:
    birth = reactions.on_status(conn, Status(cabinet="cab-1", online=True, agent_version="1.0"), T0)
    assert birth.desired_changed == {"cab-1"}
    will = reactions.on_status(
        conn, Status(cabinet="cab-1", online=False), T0 + timedelta(minutes=1)
    )
    assert will.alerts_raised
    assert [a[1] for a in open_alerts(conn)] == ["offline"]
    # an event proves the cabinet is back
    reactions.on_events(conn, [Cabinet().closed(T0, "A1")], T0 + timedelta(minutes=2))
    assert conn.execute("SELECT online FROM cabinets").fetchone() == (True,)
    assert open_alerts(conn) == []
    silent = reactions.on_silence(conn, "cab-1", T0, T0 + timedelta(minutes=5))
    assert silent.alerts_raised
    assert reactions.on_silence(conn, "cab-1", T0, T0 + timedelta(minutes=6)).alerts_raised == []
    assert open_alerts(conn) == [(None, "offline", 1)]


def test_telemetry_temperature_alerts(conn: Conn, reactions: Reactions) -> None:
    def reading(c: float) -> Telemetry:
        return Telemetry(
            cabinet="cab-1", ts=T0, uptime_s=1.0, outbox_depth=0, compartment_temps={"K1": c}
        )

    assert reactions.on_telemetry(conn, [reading(5.0)], T0).alerts_raised == []
    assert reactions.on_telemetry(conn, [reading(11.5)], T0).alerts_raised
    assert [a[1] for a in open_alerts(conn)] == ["temperature"]
    assert reactions.on_telemetry(conn, [reading(4.0)], T0).alerts_cleared
    row = conn.execute(
        "SELECT temperature_c FROM compartments WHERE cabinet = 'cab-1' AND id = 'K1'"
    ).fetchone()
    assert row == (4.0,)


def test_reported_version_is_recorded(conn: Conn, reactions: Reactions) -> None:
    reactions.on_reported(conn, Reported(cabinet="cab-1", desired_version=7), T0)
    assert conn.execute("SELECT reported_version FROM cabinets").fetchone() == (7,)


def test_the_module_itself_is_the_seam(
    conn: Conn, keys: CloudKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest may pass the module as its rules object (docs/cloud-internals.md)."""
    monkeypatch.setattr(reactions_module, "_default", None)
    pem = tmp_path / "cloud.pem"
    pem.write_bytes(private_key_pem(keys.signing_key))
    monkeypatch.setenv("SMARTLOCKER_SIGNING_KEY", str(pem))
    r = reserve_parcel(
        conn, keys, size="s", cabinet="cab-1", actor="api", now=T0, recipient="ann@example.test"
    )
    cab = Cabinet()
    t = T0 + timedelta(minutes=1)
    effects = [
        reactions_module.on_events(
            conn,
            [
                cab.unlocked(t, "A1", UnlockSource.DEPOSIT_CODE, parcel=r.parcel),
                cab.opened(t, "A1"),
                cab.closed(t, "A1"),
            ],
            t,
        ),
        None,
        reactions_module.on_tick(conn, t),
    ]
    total = Effects.combine(effects)
    assert total.desired_changed == {"cab-1"}
    # the pickup code was hashed with the key from the environment
    (note,) = queued_codes(conn)
    assert note.code is not None
    row = conn.execute("SELECT hash FROM codes WHERE parcel = %s AND kind = 'pickup'", (r.parcel,))
    assert row.fetchone() == (hash_code(keys.code_key("cab-1"), note.code),)
    assert reactions_module.configure(keys).keys is keys


def test_ingest_and_the_api_do_not_deadlock_on_one_parcel(
    core_url: str, conn: Conn, keys: CloudKeys, reactions: Reactions
) -> None:
    """Ingest holds the compartment (door events) for its batch while the API cancels.

    The rules lock compartment → parcel everywhere, so the API waits for ingest
    instead of deadlocking with it, then finds the parcel deposited.
    """
    r = reserve_parcel(conn, keys, size="s", cabinet="cab-1", actor="api", now=T0)
    cab = Cabinet()
    outcome: list[BaseException | None] = []
    with psycopg.connect(core_url) as ingest, psycopg.connect(core_url, autocommit=True) as api:
        reactions.on_events(
            ingest,
            [
                cab.unlocked(T0, "A1", UnlockSource.DEPOSIT_CODE, parcel=r.parcel),
                cab.opened(T0, "A1"),
            ],
            T0,
        )

        def cancel() -> None:
            try:
                cancel_parcel(api, r.parcel, now=T0, actor="api")
            except BaseException as exc:
                outcome.append(exc)
            else:
                outcome.append(None)

        worker = threading.Thread(target=cancel)
        worker.start()
        time.sleep(0.3)  # the API is now waiting for the compartment
        assert outcome == []
        effects = reactions.on_events(ingest, [cab.closed(T0, "A1")], T0)
        ingest.commit()
        worker.join(timeout=10)
    assert [t.to_state for t in effects.transitions] == ["deposited"]
    assert len(outcome) == 1
    assert isinstance(outcome[0], InvalidTransition)
    assert state(conn, r.parcel) == "deposited"


def test_an_unlocked_event_opens_the_lock_and_records_why_in_one_statement(
    conn: Conn, keys: CloudKeys, reactions: Reactions
) -> None:
    """A command's grant is its purpose and parcel, read with the update; an unknown
    command (or one of another cabinet) is an operator's; a code's grant is its kind."""
    r = reserve_parcel(conn, keys, size="s", cabinet="cab-1", actor="api", now=T0)
    deposit_cmd = create_unlock_command(
        conn, "cab-1", "A1", "deposit", "courier", now=T0, parcel=r.parcel, purpose="deposit"
    )
    operator_cmd = create_unlock_command(conn, "cab-1", "A2", "look", "op", now=T0)
    cab = Cabinet()
    reactions.on_events(
        conn,
        [
            cab.unlocked(T0, "A1", UnlockSource.COMMAND, command_id=deposit_cmd.id),
            cab.unlocked(T0, "A2", UnlockSource.COMMAND, command_id=operator_cmd.id),
            cab.unlocked(T0, "B1", UnlockSource.COMMAND, command_id="no-such-command"),
            cab.unlocked(T0, "C1", UnlockSource.PICKUP_CODE, parcel=r.parcel),
        ],
        T0,
    )
    # a command id of another cabinet does not lend its grant
    other = Cabinet("cab-2")
    create_cabinet(conn, "cab-2", "site-1", [CompartmentSpec("A1", "s")])
    reactions.on_events(
        conn, [other.unlocked(T0, "A1", UnlockSource.COMMAND, command_id=deposit_cmd.id)], T0
    )
    rows = conn.execute(
        "SELECT cabinet || '/' || id, lock, grant_kind, grant_parcel, grant_at, grant_opened"
        " FROM compartments WHERE grant_kind IS NOT NULL ORDER BY 1"
    ).fetchall()
    assert rows == [
        ("cab-1/A1", "unlocked", "deposit", r.parcel, T0, False),
        ("cab-1/A2", "unlocked", "operator", None, T0, False),
        ("cab-1/B1", "unlocked", "operator", None, T0, False),
        ("cab-1/C1", "unlocked", "pickup", r.parcel, T0, False),
        ("cab-2/A1", "unlocked", "operator", None, T0, False),
    ]
    # the door closes: locked again, the grant gone, and what it was decided the rest
    effects = reactions.on_events(conn, [cab.opened(T0, "A1"), cab.closed(T0, "A1")], T0)
    assert [t.to_state for t in effects.transitions] == ["deposited"]
    assert conn.execute(
        "SELECT door, lock, grant_kind, grant_parcel FROM compartments"
        " WHERE cabinet = 'cab-1' AND id = 'A1'"
    ).fetchone() == ("closed", "locked", None, None)


def test_a_door_closing_that_moves_no_parcel_takes_no_savepoint(
    conn: Conn, core_url: str, keys: CloudKeys, reactions: Reactions
) -> None:
    """Only a parcel's move may be refused; a door that closes after an operator's
    opening is one statement (and the held-open alert's clearing, if one is open),
    with no savepoint around them (its SAVEPOINT and RELEASE were two more round
    trips)."""
    cmd = create_unlock_command(conn, "cab-1", "A1", "look", "op", now=T0)
    cab = Cabinet()
    reactions.on_events(
        conn,
        [cab.unlocked(T0, "A1", UnlockSource.COMMAND, command_id=cmd.id), cab.opened(T0, "A1")],
        T0,
    )
    closed = cab.closed(T0, "A1")
    with PgWireTap(core_url) as tap, psycopg.connect(tap.url) as tapped, tapped.transaction():
        reactions.on_events(tapped, [], T0)  # connection warm
        mark = tap.mark()
        reactions.on_events(tapped, [closed], T0)
        wire = "".join(tap.messages[mark:])
        # The cabinet touched and its clock read (one statement, once per batch), then
        # the door, which says whether a held-open alert is open (none: no clearing
        # sent), read with the pipeline's Sync: two extended-protocol statements
        # (Execute) in two round trips (they were four statements, four round trips:
        # the clock read apart, the clearing of no alert); a savepoint would add a
        # Query each way.
        assert wire.count("E") == 2, wire
        assert "Q" not in wire, wire
        assert tap.round_trips(mark) == 2, wire
    assert conn.execute(
        "SELECT door, lock, grant_kind FROM compartments WHERE cabinet = 'cab-1' AND id = 'A1'"
    ).fetchone() == ("closed", "locked", None)


def test_an_unlocks_events_take_two_round_trips(
    conn: Conn, core_url: str, reactions: Reactions
) -> None:
    """A remote unlock's events (``unlocked``, ``door_opened``, ``door_closed``) in a
    transaction of ingest's: the plain updates are not waited for but sent with the
    next statement whose result is read, so the batch's rules take two round trips
    (the cabinet's ``last_seen`` and clock; the rest, read with the Sync), not six
    (a statement a trip, one more for the clock, and one for clearing a held-open
    alert that is not there); the door's opening goes with the unlock, in one
    statement. Same state as before."""
    mark_online(conn, "cab-1", at=T0, now=T0)
    cmd = create_unlock_command(conn, "cab-1", "A1", "look", "op", now=T0)
    cab = Cabinet()
    events = [
        cab.unlocked(T0, "A1", UnlockSource.COMMAND, command_id=cmd.id),
        cab.opened(T0 + timedelta(seconds=1), "A1"),
        cab.closed(T0 + timedelta(seconds=2), "A1"),
    ]
    now = T0 + timedelta(seconds=3)
    with PgWireTap(core_url) as tap, psycopg.connect(tap.url) as tapped:
        with tapped.transaction():
            reactions.on_events(tapped, [], now)  # connection warm, transaction open
            mark = tap.mark()
            effects = reactions.on_events(tapped, events, now)
            wire = "".join(tap.messages[mark:])
        # touch and clock; unlocked and opened (one statement), closed (no held-open
        # alert: no clearing)
        assert wire.count("E") == 3, wire
        assert "Q" not in wire, wire
        assert tap.round_trips(mark) == 2, wire
    assert not effects
    assert conn.execute(
        "SELECT door, lock, grant_kind, grant_opened, door_changed_at FROM compartments"
        " WHERE cabinet = 'cab-1' AND id = 'A1'"
    ).fetchone() == ("closed", "locked", None, False, T0 + timedelta(seconds=2))
    assert conn.execute("SELECT last_seen FROM cabinets WHERE id = 'cab-1'").fetchone() == (now,)


def test_closed_doors_clear_their_held_open_alerts_in_a_pipelined_batch(
    conn: Conn, core_url: str, reactions: Reactions
) -> None:
    """The closed door's statement says whether its held-open alert is open; the
    clearing is sent only then, in the events' order: for an alert raised before the
    batch, for one the batch's own alarm raised, and with the batch's last event."""
    mark_online(conn, "cab-1", at=T0, now=T0)
    before, _ = raise_alert(conn, "cab-1", AlertKind.HELD_OPEN, now=T0, compartment="A1")
    cab = Cabinet()
    events = [
        cab.closed(T0, "A1"),
        cab.alarm(T0, AlarmKind.HELD_OPEN, True, "A2"),
        cab.closed(T0 + timedelta(seconds=1), "A2"),
        cab.opened(T0 + timedelta(seconds=2), "B1"),
        cab.alarm(T0 + timedelta(seconds=2), AlarmKind.HELD_OPEN, True, "B1"),
        cab.closed(T0 + timedelta(seconds=3), "B1"),
    ]
    now = T0 + timedelta(seconds=4)
    with psycopg.connect(core_url) as other, other.transaction():
        other.execute("SELECT 1")  # the transaction open, as ingest's is
        effects = reactions.on_events(other, events, now)
    ids = [r[0] for r in conn.execute("SELECT id FROM alerts ORDER BY id").fetchall()]
    assert ids[0] == before
    assert effects.alerts_raised == ids[1:]
    assert effects.alerts_cleared == ids
    assert open_alerts(conn) == []
    assert conn.execute(
        "SELECT id, door FROM compartments WHERE cabinet = 'cab-1' AND id IN ('A1', 'A2', 'B1')"
        " ORDER BY id"
    ).fetchall() == [("A1", "closed"), ("A2", "closed"), ("B1", "closed")]


@pytest.mark.parametrize("source", [UnlockSource.COMMAND, UnlockSource.DEPOSIT_CODE])
def test_an_unlock_and_its_doors_opening_in_one_statement_leave_what_two_would(
    conn: Conn, core_url: str, reactions: Reactions, source: UnlockSource
) -> None:
    """``unlocked`` followed by its compartment's ``door_opened`` in a batch is one
    statement: the compartment's row, and the dashboard's notes of the transaction,
    are those the two statements leave (here each event in a call of its own)."""
    mark_online(conn, "cab-1", at=T0, now=T0)
    cab = Cabinet()

    def unlocked(comp: str) -> Event:
        if source is UnlockSource.COMMAND:
            cmd = create_unlock_command(conn, "cab-1", comp, "look", "op", now=T0)
            return cab.unlocked(T0, comp, source, command_id=cmd.id)
        return cab.unlocked(T0, comp, source, parcel="p-1")

    def notes(batches: list[list[Event]]) -> list[str]:
        with psycopg.connect(core_url, autocommit=True) as listener:
            listener.execute("LISTEN smartlocker_dashboard")
            with psycopg.connect(core_url) as other, other.transaction():
                other.execute("SELECT 1")  # the transaction open, as ingest's is
                for batch in batches:
                    reactions.on_events(other, batch, T0 + timedelta(seconds=5))
            return [n.payload for n in listener.notifies(timeout=0.5)]

    opened = T0 + timedelta(milliseconds=3)
    one = notes([[unlocked("A1"), cab.opened(opened, "A1")]])
    two = notes([[unlocked("A2")], [cab.opened(opened, "A2")]])
    rows = conn.execute(
        "SELECT id, door, lock, grant_kind, grant_parcel, grant_at, grant_opened,"
        " door_changed_at FROM compartments WHERE cabinet = 'cab-1' AND id IN ('A1', 'A2')"
        " ORDER BY id"
    ).fetchall()
    assert rows[0][1:] == rows[1][1:]
    kind = "operator" if source is UnlockSource.COMMAND else "deposit"
    assert rows[0][1:5] == ("open", "unlocked", kind, None if kind == "operator" else "p-1")
    assert rows[0][6:] == (True, opened)
    assert [n.replace("A1", "A?") for n in one] == [n.replace("A2", "A?") for n in two]
    assert len(one) == 1
