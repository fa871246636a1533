"""The ack fast path: a batch's acks commit first, in their own transaction, and the
database ends up as if everything had been applied in arrival order."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import psycopg

from smartlocker.cloud.downlink import create_unlock_command
from smartlocker.cloud.ingest.intake import Inbound, TopicCache
from smartlocker.cloud.ingest.seam import load_rules
from smartlocker.cloud.ingest.writer import Outcome, Writer, WriterSettings
from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.rules.commands import mark_sent
from smartlocker.protocol import (
    Ack,
    AckOutcome,
    CompartmentReport,
    DoorClosed,
    DoorOpened,
    DoorState,
    Reported,
    TopicScheme,
    Unlocked,
    UnlockSource,
    encode,
    generate_private_key,
)

from .harness import provision, query, topic


def _inbound(message: Any, channel: str, now: datetime, mid: int) -> Inbound:
    return Inbound(topic(message.cabinet, channel), encode(message), now, ("conn", mid))


def test_an_ack_committed_before_its_batchs_events_leaves_the_database_consistent(
    db_url: str,
) -> None:
    provision(db_url, ["cab-f"])
    keys = CloudKeys.from_private_key(generate_private_key())
    now = datetime.now(UTC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        command = create_unlock_command(conn, "cab-f", "c1", "fast", "tester", now=now)
        mark_sent(conn, command.id, now=now)
    outcomes: list[Outcome] = []
    writer = Writer(
        WriterSettings(db_url), load_rules(keys), TopicCache(TopicScheme()), outcomes.append
    )
    # What the agent sends for one remote unlock, in one batch: the ack overtakes the
    # events it belongs to (the agent publishes acks first), the door opens and closes.
    batch = [
        _inbound(
            Ack(cabinet="cab-f", command_id=command.id, outcome=AckOutcome.OPENED),
            "acks",
            now,
            1,
        ),
        _inbound(
            Unlocked(
                cabinet="cab-f",
                seq=1,
                compartment="c1",
                source=UnlockSource.COMMAND,
                command_id=command.id,
                pulse_ms=2,
            ),
            "events",
            now,
            2,
        ),
        _inbound(
            DoorOpened(cabinet="cab-f", seq=2, compartment="c1", granted=True), "events", now, 3
        ),
        _inbound(
            Reported(
                cabinet="cab-f",
                desired_version=0,
                compartments=[CompartmentReport(id="c1", door=DoorState.OPEN, enabled=True)],
            ),
            "reported",
            now,
            4,
        ),
    ]
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN smartlocker_command")
        outcome = writer._commit(batch)
        notes = [json.loads(n.payload) for n in listener.notifies(timeout=2, stop_after=1)]
    try:
        assert outcome.new_events == 2
        assert outcome.receipts == {"cab-f": 2}
        assert notes == [
            {"id": command.id, "status": "succeeded", "outcome": "opened", "outcome_reason": None}
        ]
        # The ack's transaction came first (its xid is older than the events').
        ((ack_xid,),) = query(
            db_url, "SELECT xmin::text::bigint FROM commands WHERE id = %s", (command.id,)
        )
        event_xids = query(db_url, "SELECT xmin::text::bigint FROM events WHERE cabinet = 'cab-f'")
        assert event_xids
        assert all(ack_xid < x for (x,) in event_xids)
        # ... and the end state is the in-order one: the command succeeded, the door is
        # open with the operator's grant used, the lock unlocked, no alert.
        assert query(
            db_url, "SELECT status, outcome FROM commands WHERE id = %s", (command.id,)
        ) == [("succeeded", "opened")]
        assert query(
            db_url,
            "SELECT door, lock, grant_kind, grant_opened FROM compartments WHERE cabinet = 'cab-f'",
        ) == [("open", "unlocked", "operator", True)]
        assert query(db_url, "SELECT count(*) FROM alerts WHERE cabinet = 'cab-f'") == [(0,)]
        # The door closes in a later batch: the grant completes as usual.
        writer._commit(
            [
                _inbound(
                    DoorClosed(cabinet="cab-f", seq=3, compartment="c1", open_seconds=0.01),
                    "events",
                    now,
                    5,
                )
            ]
        )
        assert query(
            db_url,
            "SELECT door, lock, grant_kind FROM compartments WHERE cabinet = 'cab-f'",
        ) == [("closed", "locked", None)]
        # A duplicate delivery of the whole batch changes nothing.
        again = writer._commit(batch)
        assert again.new_events == 0
        assert query(
            db_url, "SELECT status, xmin::text::bigint FROM commands WHERE id = %s", (command.id,)
        ) == [("succeeded", ack_xid)]
    finally:
        writer._drop_connection()


def test_a_batch_of_only_acks_is_applied_and_checked_as_before(db_url: str) -> None:
    provision(db_url, ["cab-g"])
    keys = CloudKeys.from_private_key(generate_private_key())
    now = datetime.now(UTC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        command = create_unlock_command(conn, "cab-g", "c1", "fast", "tester", now=now)
    writer = Writer(
        WriterSettings(db_url), load_rules(keys), TopicCache(TopicScheme()), lambda o: None
    )
    try:
        writer._commit(
            [
                _inbound(
                    Ack(cabinet="cab-g", command_id=command.id, outcome=AckOutcome.OPENED),
                    "acks",
                    now,
                    1,
                ),
                _inbound(
                    Ack(cabinet="cab-gx", command_id="nope", outcome=AckOutcome.OPENED),
                    "acks",
                    now,
                    2,
                ),
            ]
        )
        assert query(db_url, "SELECT status FROM commands WHERE id = %s", (command.id,)) == [
            ("succeeded",)
        ]
        # the unknown cabinet's ack is a dead letter, as before
        assert query(
            db_url, "SELECT reason FROM dead_letters WHERE topic = 'lockers/cab-gx/acks'"
        ) == [("unknown_cabinet",)]
    finally:
        writer._drop_connection()
