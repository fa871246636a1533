"""Through MQTT into the real rules: door events, acks → command status, reported → version.

The rules run inside ingest's transaction; their state is what this checks.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg

from smartlocker.cloud.downlink import create_unlock_command
from smartlocker.cloud.ingest.seam import downlink_factory, load_rules
from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.rules.commands import mark_sent
from smartlocker.embedded import MosquittoBroker
from smartlocker.protocol import (
    Ack,
    AckOutcome,
    CompartmentReport,
    DoorOpened,
    DoorState,
    Reported,
    encode,
    generate_private_key,
)
from tests.support.mqtt import connected

from .harness import InProcessIngest, provision, query, topic, wait_for


def test_rules_see_events_acks_and_reports(fresh_broker: MosquittoBroker, db_url: str) -> None:
    provision(db_url, ["cab-w"])
    keys = CloudKeys.from_private_key(generate_private_key())
    now = datetime.now(UTC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        command = create_unlock_command(conn, "cab-w", "c1", "test", "tester", now=now)
        mark_sent(conn, command.id, now=now)
    with (
        InProcessIngest(
            fresh_broker.url,
            db_url,
            rules=load_rules(keys),
            deliver_factory=downlink_factory(keys),
        ),
        connected(fresh_broker.host, fresh_broker.port) as cab,
    ):
        cab.subscribe(topic("cab-w", "receipts"))
        cab.publish(
            topic("cab-w", "events"),
            encode(DoorOpened(cabinet="cab-w", seq=1, compartment="c1", granted=False)),
        )
        assert json.loads(cab.expect(timeout=10).payload)["upto_seq"] == 1
        cab.publish(
            topic("cab-w", "acks"),
            encode(Ack(cabinet="cab-w", command_id=command.id, outcome=AckOutcome.OPENED)),
        )
        cab.publish(
            topic("cab-w", "reported"),
            encode(
                Reported(
                    cabinet="cab-w",
                    desired_version=7,
                    compartments=[CompartmentReport(id="c1", door=DoorState.CLOSED, enabled=True)],
                )
            ),
            # Not retained here: the broker is shared by the session's tests, and a
            # retained message reaches every later ingest that subscribes.
        )
        wait_for(
            lambda: (
                query(db_url, "SELECT status FROM commands WHERE id = %s", (command.id,))
                == [("succeeded",)]
            ),
            what="the ack moved the command on",
        )
        wait_for(
            lambda: (
                query(db_url, "SELECT reported_version FROM cabinets WHERE id = 'cab-w'") == [(7,)]
            ),
            what="the reported version applied",
        )
    # The rules saw the door event (committed with its row): the door's change is dated.
    assert query(db_url, "SELECT count(*) FROM events WHERE cabinet = 'cab-w'") == [(1,)]
    assert query(
        db_url,
        "SELECT door_changed_at IS NOT NULL FROM compartments"
        " WHERE cabinet = 'cab-w' AND id = 'c1'",
    ) == [(True,)]
    assert query(db_url, "SELECT count(*) FROM dead_letters") == [(0,)]
