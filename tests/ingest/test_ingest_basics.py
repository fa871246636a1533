"""Rows, de-duplication and receipts: the ingest worker against real services."""

from __future__ import annotations

import queue

from smartlocker.embedded import MosquittoBroker
from tests.support.mqtt import connected

from .harness import InProcessIngest, count, event, provision, query, topic, wait_for


def _drain(q: queue.Queue) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def test_events_are_stored_once_and_receipted_contiguously(
    mqtt_broker: MosquittoBroker, db_url: str
) -> None:
    provision(db_url, ["cab-1"])
    seen: dict[str, int] = {}
    with (
        InProcessIngest(mqtt_broker.url, db_url),
        connected(mqtt_broker.host, mqtt_broker.port) as cab,
    ):
        cab.subscribe(topic("cab-1", "receipts"))
        # seq 1..30, 11..20 twice, 25 held back (a gap), then sent late.
        for seq in [*range(1, 25), *range(11, 21), *range(26, 31)]:
            cab.publish(topic("cab-1", "events"), event("cab-1", seq))

        def receipted(upto: int) -> bool:
            for msg in _drain(cab.messages):
                import json

                data = json.loads(msg.payload)
                seen["cab-1"] = max(seen.get("cab-1", 0), data["upto_seq"])
            return seen.get("cab-1", 0) >= upto

        wait_for(lambda: receipted(24), what="receipt up to 24")
        wait_for(lambda: count(db_url, "SELECT count(*) FROM events") == 29, what="29 rows stored")
        # Not beyond the gap, however long we wait.
        assert not receipted(25)
        cab.publish(topic("cab-1", "events"), event("cab-1", 25))
        wait_for(lambda: receipted(30), what="receipt up to 30 once the gap is filled")
    assert count(db_url, "SELECT count(*) FROM events") == 30
    assert count(db_url, "SELECT count(DISTINCT (cabinet, seq, ts)) FROM events") == 30
    (row,) = query(db_url, "SELECT committed_seq, ahead FROM ingest_cursors")
    assert row == (30, [])
