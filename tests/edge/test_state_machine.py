"""Stateful property test of the cabinet's rules (hypothesis ``RuleBasedStateMachine``).

The real :class:`Cabinet` (store on disk, locks and doors on ``MockFactory`` pins,
fake clock) is driven by commands of every kind, codes of every kind, door moves,
the clock, reconnects (retained desired state and the last command delivered again)
and restarts of the agent; a small model says what must have happened.
Invariants: no lock is ever energised longer than its limit; every pulse has an
``unlocked`` event for a valid command or code; every door opening has a grant or
a ``forced_open`` alarm; no compartment opens for an expired, revoked, disabled or
wrong code or for a forged, foreign, expired, retained or replayed command; a command
is accepted exactly when its counter is new to the replay window (a model that
remembers every counter says which), also across restarts, which reopen the store.

The MQTT link itself is not part of this machine (the cabinet's outlet records instead,
and a reconnect is modelled by what it delivers); the link's resending is covered
against a real broker in ``test_outbox_kill.py``.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gpiozero.pins.mock import MockFactory
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from smartlocker.edge_agent import Cabinet, Store, parse_config
from smartlocker.protocol import (
    REPLAY_WINDOW,
    Channel,
    CodeGrant,
    CodeKind,
    DesiredCompartment,
    DesiredState,
    UnlockCommand,
    decode,
    encode,
    generate_private_key,
    hash_code,
    public_key_pem,
    sign,
)
from tests.edge.conftest import DOOR_PINS, LOCK_PINS, code_key, config_dict

KEY = generate_private_key()
OTHER_KEY = generate_private_key()
COMPARTMENTS = ("a1", "a2", "a3")
WINDOW_S = 10.0
MAX_PULSE_S = 0.025
#: Scheduling latency allowed on top of a pulse's length when measured on the pin.
JITTER_S = 0.25
CODES = {  # name: (code, compartment, kind)
    "pickup_a1": ("11112222", "a1", CodeKind.PICKUP),
    "deposit_a2": ("33334444", "a2", CodeKind.DEPOSIT),
    "pickup_a2": ("55556666", "a2", CodeKind.PICKUP),
    "expired_a1": ("77778888", "a1", CodeKind.PICKUP),
    "revoked_a1": ("99990000", "a1", CodeKind.PICKUP),
    "disabled_a3": ("12121212", "a3", CodeKind.PICKUP),
}
VALID = {"pickup_a1", "deposit_a2", "pickup_a2"}


class FakeClock:
    def __init__(self) -> None:
        self.wall = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


class Recorder:
    def __init__(self) -> None:
        self.unstored_acks: list[bytes] = []

    def kick(self) -> None:
        pass

    def send_unstored_ack(self, payload: bytes) -> None:
        self.unstored_acks.append(payload)


@dataclass
class Model:
    grants: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in COMPARTMENTS})
    door_open: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(COMPARTMENTS, False))
    counter: int = 0
    #: Every counter the cabinet has answered (authentic commands), never forgotten.
    seen: set[int] = field(default_factory=set)
    valid_commands: set[str] = field(default_factory=set)
    sent_valid: list[bytes] = field(default_factory=list)
    used_codes: set[str] = field(default_factory=set)


class CabinetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="edge-sm-"))
        (self.dir / "cloud.pub").write_bytes(public_key_pem(KEY))
        data = config_dict(
            self.dir / "data",
            self.dir / "cloud.pub",
            "mqtt://127.0.0.1:1",
            throttle={"free_attempts": 1_000_000},
        )
        for comp in data["compartments"]:
            comp.update(pulse_ms=15, max_pulse_ms=25, open_window_s=WINDOW_S, held_open_s=60.0)
        self.config = parse_config(data)
        self.clock = FakeClock()
        self.factory = MockFactory()
        self.store = Store(self.config.database_path)
        self.outlet = Recorder()
        self.cabinet = self._new_cabinet()
        self.model = Model()
        self.seen_seq = 0
        self.unlocked: dict[str, int] = dict.fromkeys(COMPARTMENTS, 0)
        self.unlocked_commands: set[str] = set()
        now = self.clock.now()
        hashes = {n: hash_code(code_key(), c) for n, (c, _, _) in CODES.items()}

        def grant(name: str, until: datetime) -> CodeGrant:
            _code, comp, kind = CODES[name]
            return CodeGrant(
                hash=hashes[name],
                compartment=comp,
                kind=kind,
                parcel=f"p-{name}",
                valid_until=until,
            )

        later = now + timedelta(days=2)
        v1 = DesiredState(
            cabinet="cab-a",
            version=1,
            codes=[grant("revoked_a1", later), grant("pickup_a1", later)],
        )
        self.v1_payload = encode(sign(v1, KEY))
        self.cabinet.handle_desired(self.v1_payload)
        v2 = DesiredState(
            cabinet="cab-a",
            version=2,
            compartments=[DesiredCompartment(id="a3", enabled=False)],
            codes=[
                grant("pickup_a1", later),
                grant("deposit_a2", later),
                grant("pickup_a2", later),
                grant("expired_a1", now - timedelta(seconds=1)),
                grant("disabled_a3", later),
            ],
        )
        self.v2_payload = encode(sign(v2, KEY))
        self.cabinet.handle_desired(self.v2_payload)
        assert self.cabinet.desired.version == 2
        self.valid_hashes = {hashes[n]: n for n in VALID}
        self._check_events()

    def _new_cabinet(self) -> Cabinet:
        cabinet = Cabinet(
            self.config,
            self.store,
            public_key=KEY.public_key(),
            pin_factory=self.factory,
            clock=self.clock,
            outlet=self.outlet,
        )
        cabinet.open()
        return cabinet

    def teardown(self) -> None:
        self.cabinet.close("test over")
        self.store.close()
        self.factory.reset()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------

    def _new_events(self) -> list:
        events = [
            decode(Channel.EVENTS, p) for _, p in self.store.pending_events(self.seen_seq, 10**6)
        ]
        if events:
            self.seen_seq = events[-1].seq
        return events

    def _check_events(self) -> list:
        events = self._new_events()
        for i, event in enumerate(events):
            if event.type == "door_opened" and not event.granted:
                follow = events[i + 1] if i + 1 < len(events) else None
                assert follow is not None
                assert follow.type == "alarm"
                assert (follow.kind, follow.active) == ("forced_open", True)
                assert follow.compartment == event.compartment
            elif event.type == "unlocked":
                self.unlocked[event.compartment] += 1
                if event.source == "command":
                    assert event.command_id in self.model.valid_commands
                    assert event.command_id not in self.unlocked_commands, "pulsed twice"
                    self.unlocked_commands.add(event.command_id)
                else:
                    assert event.parcel in {f"p-{n}" for n in VALID}
            elif event.type == "code_accepted":
                assert event.code_hash in self.valid_hashes
        return events

    def _stimulus_is_granted(self, compartment: str) -> None:
        if not self.model.door_open[compartment]:
            self.model.grants[compartment].append(self.clock.mono + WINDOW_S)

    # -- rules ------------------------------------------------------------------------

    @rule(
        compartment=st.sampled_from((*COMPARTMENTS, "zz")),
        variant=st.sampled_from(
            [
                "valid",
                "forged",
                "wrong_cabinet",
                "expired",
                "retained",
                "replayed",
                "duplicate",
                "ahead",
                "behind",
            ]
        ),
        step=st.sampled_from([1, 2, 5, REPLAY_WINDOW - 1, REPLAY_WINDOW, REPLAY_WINDOW + 1]),
    )
    def command(self, compartment: str, variant: str, step: int) -> None:
        if variant == "duplicate":
            if not self.model.sent_valid:
                return
            before = sum(self.unlocked.values())
            self.cabinet.handle_command(self.model.sent_valid[-1])
            self._check_events()
            assert sum(self.unlocked.values()) == before, "a duplicate pulsed again"
            return
        now = self.clock.now()
        counter = self.model.counter + 1
        if variant == "replayed":
            if self.model.counter == 0:
                return
            counter = self.model.counter
        elif variant == "ahead":
            counter = self.model.counter + step
        elif variant == "behind":
            counter = self.model.counter - step
            if counter < 1:
                return
        command = UnlockCommand(
            cabinet="cab-b" if variant == "wrong_cabinet" else "cab-a",
            compartment=compartment,
            counter=counter,
            ts=now - timedelta(minutes=10) if variant == "expired" else now,
            expires=now + timedelta(seconds=30 - (900 if variant == "expired" else 0)),
        )
        payload = encode(sign(command, OTHER_KEY if variant == "forged" else KEY))
        before = sum(self.unlocked.values())
        self.cabinet.handle_command(payload, retained=variant == "retained")
        authentic = variant not in ("forged", "wrong_cabinet")
        new = counter > self.model.counter - REPLAY_WINDOW and counter not in self.model.seen
        if authentic:
            self.model.seen.add(counter)
            self.model.counter = max(self.model.counter, counter)
        valid = variant in ("valid", "ahead", "behind") and new and compartment in ("a1", "a2")
        record = self.store.command(command.id)
        if authentic:
            assert record is not None
            assert (record.outcome != "rejected") == valid, (variant, counter, record)
        else:
            assert record is None
        if valid:
            self.model.valid_commands.add(command.id)
            self.model.sent_valid.append(payload)
            self._stimulus_is_granted(compartment)
        self._check_events()
        if not valid:
            assert sum(self.unlocked.values()) == before

    @rule(name=st.sampled_from([*CODES, "wrong", "malformed"]))
    def enter_code(self, name: str) -> None:
        if name == "wrong":
            code: object = "31415926"
        elif name == "malformed":
            code = "12ab"
        else:
            code = CODES[name][0]
        result = self.cabinet.submit_code(code)
        valid = name in VALID and name not in self.model.used_codes
        assert result.ok == valid, (name, result)
        if valid:
            self.model.used_codes.add(name)
            self._stimulus_is_granted(CODES[name][1])
        before = sum(self.unlocked.values())
        self._check_events()
        if not valid:
            assert sum(self.unlocked.values()) == before

    @rule(compartment=st.sampled_from(COMPARTMENTS), is_open=st.booleans())
    def move_door(self, compartment: str, is_open: bool) -> None:
        if self.model.door_open[compartment] == is_open:
            return
        pin = self.factory.pin(DOOR_PINS[compartment])
        (pin.drive_high if is_open else pin.drive_low)()
        self.model.door_open[compartment] = is_open
        events = self._check_events()
        if is_open:
            granted = any(exp > self.clock.mono for exp in self.model.grants[compartment])
            self.model.grants[compartment].clear()
            opened = [e for e in events if e.type == "door_opened"]
            assert len(opened) == 1
            assert opened[0].granted == granted
        else:
            assert [e.type for e in events][:1] == ["door_closed"]

    @rule(seconds=st.floats(min_value=0.0, max_value=30.0))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.cabinet.tick()
        for comp in COMPARTMENTS:
            if not self.model.door_open[comp]:
                self.model.grants[comp] = [
                    e for e in self.model.grants[comp] if e > self.clock.mono
                ]
        self._check_events()

    @rule(stale=st.booleans())
    def reconnect(self, stale: bool) -> None:
        """What a reconnect does to the cabinet's inputs: the broker delivers the retained
        desired state again (or an older retained copy) and redelivers the last QoS 1
        command of the persistent session."""
        before = sum(self.unlocked.values())
        self.cabinet.handle_desired(self.v1_payload if stale else self.v2_payload, retained=True)
        if self.model.sent_valid:
            self.cabinet.handle_command(self.model.sent_valid[-1])
        self._check_events()
        assert self.cabinet.desired.version == 2
        assert sum(self.unlocked.values()) == before

    @rule()
    def restart(self) -> None:
        self.cabinet.close("restart")
        self.store.close()
        self.store = Store(self.config.database_path)
        self.cabinet = self._new_cabinet()
        for comp in COMPARTMENTS:
            self.model.grants[comp].clear()
        self._check_events()

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def pulses_are_bounded(self) -> None:
        # Every pulse is timed for at most the limit, exactly ...
        for lock in self.cabinet.locks.values():
            assert all(ms <= MAX_PULSE_S * 1000 for ms in lock.recent_pulses)
        # ... and ends: as measured on the pin, within the limit plus the scheduling
        # latency of a loaded machine (the timer thread may wake late).
        for comp, pin in LOCK_PINS.items():
            states = self.factory.pin(pin).states
            for prev, cur in itertools.pairwise(states):
                if prev.state and not cur.state:
                    assert cur.timestamp <= MAX_PULSE_S + JITTER_S, (comp, cur.timestamp)

    @invariant()
    def every_pulse_has_an_unlocked_event(self) -> None:
        for comp, pin in LOCK_PINS.items():
            rises = sum(1 for s in self.factory.pin(pin).states[1:] if s.state)
            assert rises == self.unlocked[comp], comp
        assert self.unlocked["a3"] == 0  # disabled throughout


CabinetMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCabinetMachine = CabinetMachine.TestCase
