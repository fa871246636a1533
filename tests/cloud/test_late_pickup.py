"""A pickup whose events arrive after the deadline sweep expired the parcel (the
cabinet was offline, e.g. without power): no ``expired → picked_up`` in the contract,
so the parcel stays expired, the pickup is audited, and a ``fault`` alert on the
compartment asks an operator to look and return it; the return then frees it."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.reactions import Reactions
from smartlocker.cloud.rules import reserve_parcel
from smartlocker.cloud.rules.commands import create_command
from smartlocker.protocol import CodeKind, UnlockSource
from tests.cloud.conftest import T0
from tests.cloud.test_reactions import Cabinet, deposit, occupancy, state

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def reactions(keys: CloudKeys) -> Reactions:
    return Reactions(keys)


def test_a_pickup_reported_after_expiry(conn: Conn, keys: CloudKeys, reactions: Reactions) -> None:
    r = reserve_parcel(conn, keys, size="s", cabinet="cab-1", actor="api", now=T0)
    cab = Cabinet()
    deposit(conn, reactions, cab, r.parcel, r.compartment)
    row = conn.execute("SELECT deadline FROM parcels WHERE id = %s", (r.parcel,)).fetchone()
    assert row is not None
    deadline = row[0]
    # The recipient opens with their code just before the deadline, while the cabinet
    # is offline; its events reach the cloud after the sweep expired the parcel.
    picked = deadline - timedelta(minutes=5)
    swept = reactions.on_tick(conn, deadline + timedelta(seconds=5))
    assert [t.to_state for t in swept.transitions] == ["expired"]
    back = deadline + timedelta(minutes=3)
    effects = reactions.on_events(
        conn,
        [
            cab.accepted(picked, r.compartment, CodeKind.PICKUP, r.parcel),
            cab.opened(picked, r.compartment),
            cab.closed(picked + timedelta(seconds=20), r.compartment),
        ],
        back,
    )
    assert effects.transitions == []
    assert state(conn, r.parcel) == "expired"
    (alert,) = effects.alerts_raised
    found = conn.execute(
        "SELECT kind, compartment, detail FROM alerts WHERE id = %s", (alert,)
    ).fetchone()
    assert found is not None
    assert found[:2] == ("fault", r.compartment)
    assert f"parcel {r.parcel} picked up" in str(found[2])
    assert "return the parcel" in str(found[2])
    audited = conn.execute(
        "SELECT actor, detail->>'picked_up_at' FROM audit_log"
        " WHERE action = 'parcel.pickup_after_expiry' AND target = %s",
        (r.parcel,),
    ).fetchall()
    assert audited == [("cabinet:cab-1", (picked + timedelta(seconds=20)).isoformat())]
    # The operator looked: the courier's return frees the compartment.
    ret = create_command(
        conn,
        "cab-1",
        r.compartment,
        reason="return",
        actor="op",
        now=back,
        parcel=r.parcel,
        purpose="return",
    )
    effects = reactions.on_events(
        conn,
        [
            cab.unlocked(back, r.compartment, UnlockSource.COMMAND, command_id=ret.id),
            cab.opened(back, r.compartment),
            cab.closed(back, r.compartment),
        ],
        back + timedelta(seconds=1),
    )
    assert [t.to_state for t in effects.transitions] == ["returned"]
    assert occupancy(conn, r.compartment) == "free"
