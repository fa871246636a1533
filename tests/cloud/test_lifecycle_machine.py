"""The parcel lifecycle against a simple model (Hypothesis stateful testing).

Every operation runs on the real rules (reservations, the cabinet's events through
:class:`Reactions`, the deadline sweep, cancellations, returns, illegal direct
transitions) and on a dictionary model with its own copy of CONTRACT.md's
transitions. After every step: no parcel lost, every state equal to the model's,
no compartment double-booked, occupancy as the model says, every history row an
allowed transition, and exactly the codes each state should have.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from smartlocker.cloud.downlink import create_unlock_command
from smartlocker.cloud.errors import InvalidTransition, NoCompartmentAvailable
from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.reactions import Reactions
from smartlocker.cloud.rules import apply_transition, cancel_parcel, reserve_parcel
from smartlocker.cloud.rules.fleet import CompartmentSpec, create_cabinet, create_site
from smartlocker.protocol import (
    CodeAccepted,
    CodeKind,
    DoorClosed,
    DoorOpened,
    Event,
    Unlocked,
    UnlockSource,
)
from tests.cloud.conftest import T0

Conn = psycopg.Connection[tuple[object, ...]]

# The model's own copy of CONTRACT.md ("Parcel states"), independent of the code's table.
CONTRACT = {
    ("reserved", "deposited"),
    ("deposited", "picked_up"),
    ("deposited", "expired"),
    ("expired", "returned"),
    ("reserved", "cancelled"),
}
STATES = ("reserved", "deposited", "picked_up", "expired", "returned", "cancelled")
ACTIVE = {"reserved", "deposited", "expired"}
SIZES = ("xs", "s", "m", "l", "xl")
COMPARTMENTS = {"A1": "s", "A2": "s", "B1": "m", "C1": "l"}
HOLD = timedelta(hours=72)
TABLES = (
    "audit_log, alerts, desired_states, commands, outbound_messages, codes, parcel_history,"
    " parcels, compartments, cabinets, fee_policies, sites"
)


@dataclass
class ModelParcel:
    compartment: str
    state: str = "reserved"
    deadline: datetime | None = None


class LifecycleMachine(RuleBasedStateMachine):
    parcels = Bundle("parcels")

    def __init__(self, conn: Conn, keys: CloudKeys) -> None:
        super().__init__()
        self.conn, self.keys = conn, keys
        self.reactions = Reactions(keys)
        conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        create_site(conn, "site-1", "Model street", hold_hours=72)
        create_cabinet(
            conn, "cab-1", "site-1", [CompartmentSpec(c, s) for c, s in COMPARTMENTS.items()]
        )
        self.now = T0
        self.seq = itertools.count(1)
        self.model: dict[str, ModelParcel] = {}

    # --- helpers -------------------------------------------------------------------

    def _free(self) -> list[str]:
        taken = {p.compartment for p in self.model.values() if p.state in ACTIVE}
        return [c for c in COMPARTMENTS if c not in taken]

    def _events(self, *events: Event) -> None:
        self.reactions.on_events(self.conn, list(events), self.now)

    def _ev(self) -> dict[str, object]:
        return {"cabinet": "cab-1", "seq": next(self.seq), "ts": self.now}

    def _door_cycle(self, comp: str) -> tuple[Event, Event]:
        return (
            DoorOpened(**self._ev(), compartment=comp, granted=True),  # type: ignore[arg-type]
            DoorClosed(**self._ev(), compartment=comp),  # type: ignore[arg-type]
        )

    # --- rules ---------------------------------------------------------------------

    @rule(target=parcels, size=st.sampled_from(SIZES))
    def reserve(self, size: str) -> str:
        fits = [c for c in self._free() if SIZES.index(COMPARTMENTS[c]) >= SIZES.index(size)]
        fits.sort(key=lambda c: (SIZES.index(COMPARTMENTS[c]), c))
        try:
            r = reserve_parcel(
                self.conn, self.keys, size=size, cabinet="cab-1", actor="model", now=self.now
            )
        except NoCompartmentAvailable:
            assert fits == [], f"refused although {fits} fit a {size} parcel"
            return "no-such-parcel"
        assert fits, f"{r.compartment} allocated although nothing was free"
        assert r.compartment == fits[0], "not the smallest free compartment that fits"
        self.model[r.parcel] = ModelParcel(r.compartment)
        return r.parcel

    @rule(parcel=parcels)
    def deposit_by_code(self, parcel: str) -> None:
        p = self.model.get(parcel)
        if p is None:
            return
        self._events(
            Unlocked(
                **self._ev(),  # type: ignore[arg-type]
                compartment=p.compartment,
                source=UnlockSource.DEPOSIT_CODE,
                parcel=parcel,
                pulse_ms=300,
            ),
            *self._door_cycle(p.compartment),
        )
        if p.state == "reserved":
            p.state, p.deadline = "deposited", self.now + HOLD

    @rule(parcel=parcels)
    def pickup_by_code(self, parcel: str) -> None:
        p = self.model.get(parcel)
        if p is None:
            return
        self._events(
            CodeAccepted(
                **self._ev(),  # type: ignore[arg-type]
                compartment=p.compartment,
                kind=CodeKind.PICKUP,
                parcel=parcel,
                code_hash="0" * 64,
            ),
            *self._door_cycle(p.compartment),
        )
        if p.state == "deposited":
            p.state = "picked_up"

    @rule(parcel=parcels)
    def return_by_command(self, parcel: str) -> None:
        p = self.model.get(parcel)
        if p is None:
            return
        cmd = create_unlock_command(
            self.conn,
            "cab-1",
            p.compartment,
            "return",
            "courier",
            now=self.now,
            parcel=parcel,
            purpose="return",
        )
        self._events(
            Unlocked(
                **self._ev(),  # type: ignore[arg-type]
                compartment=p.compartment,
                source=UnlockSource.COMMAND,
                command_id=cmd.id,
                pulse_ms=300,
            ),
            *self._door_cycle(p.compartment),
        )
        if p.state == "expired":
            p.state = "returned"

    @rule(parcel=parcels)
    def cancel(self, parcel: str) -> None:
        p = self.model.get(parcel)
        if p is None:
            return
        try:
            cancel_parcel(self.conn, parcel, now=self.now, actor="model")
        except InvalidTransition:
            assert p.state != "reserved"
        else:
            assert p.state == "reserved"
            p.state = "cancelled"

    @rule(parcel=parcels, target_state=st.sampled_from(STATES))
    def forbidden_transition(self, parcel: str, target_state: str) -> None:
        p = self.model.get(parcel)
        if p is None or (p.state, target_state) in CONTRACT:
            return
        try:
            apply_transition(self.conn, parcel, target_state, now=self.now, actor="intruder")
        except InvalidTransition:
            pass
        else:
            raise AssertionError(f"{p.state} → {target_state} was allowed")

    @rule(hours=st.integers(min_value=1, max_value=80))
    def time_passes(self, hours: int) -> None:
        self.now += timedelta(hours=hours)
        self.reactions.on_tick(self.conn, self.now)
        for p in self.model.values():
            if p.state == "deposited" and p.deadline is not None and p.deadline <= self.now:
                p.state = "expired"

    @rule(parcel=consumes(parcels))
    def forget(self, parcel: str) -> None:
        """Keeps the bundle small so that other rules meet live parcels more often."""

    # --- invariants ----------------------------------------------------------------

    @invariant()
    def states_match_and_no_parcel_is_lost(self) -> None:
        rows = dict(self.conn.execute("SELECT id, state FROM parcels").fetchall())
        assert rows == {k: p.state for k, p in self.model.items()}

    @invariant()
    def no_compartment_is_double_booked(self) -> None:
        active = self.conn.execute(
            "SELECT compartment FROM parcels WHERE state IN ('reserved', 'deposited', 'expired')"
        ).fetchall()
        assert len(active) == len(set(active))
        occupancy = dict(self.conn.execute("SELECT id, occupancy FROM compartments").fetchall())
        expected = dict.fromkeys(COMPARTMENTS, "free")
        for p in self.model.values():
            if p.state in ACTIVE:
                expected[p.compartment] = "reserved" if p.state == "reserved" else "occupied"
        assert occupancy == expected

    @invariant()
    def history_holds_only_allowed_transitions(self) -> None:
        chains: dict[str, list[tuple[str | None, str]]] = {}
        for parcel, src, dst in self.conn.execute(
            "SELECT parcel, from_state, to_state FROM parcel_history ORDER BY id"
        ):
            chains.setdefault(str(parcel), []).append((src, dst))  # type: ignore[arg-type]
        assert set(chains) == set(self.model)
        for parcel, chain in chains.items():
            assert chain[0] == (None, "reserved")
            for (_, before), (src, dst) in itertools.pairwise(chain):
                assert src == before
                assert (src, dst) in CONTRACT
            assert chain[-1][1] == self.model[parcel].state

    @invariant()
    def each_state_has_exactly_its_codes(self) -> None:
        codes = dict(
            self.conn.execute(
                "SELECT parcel, array_agg(kind ORDER BY kind) FROM codes"
                " WHERE used_at IS NULL AND revoked_at IS NULL GROUP BY parcel"
            ).fetchall()
        )
        want = {"reserved": ["deposit"], "deposited": ["pickup"]}
        expected = {k: want[p.state] for k, p in self.model.items() if p.state in want}
        assert codes == expected


def test_parcel_lifecycle_matches_the_model(core_url: str, keys: CloudKeys) -> None:
    with psycopg.connect(core_url, autocommit=True) as conn:
        run_state_machine_as_test(
            lambda: LifecycleMachine(conn, keys),
            settings=settings(
                max_examples=20,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
