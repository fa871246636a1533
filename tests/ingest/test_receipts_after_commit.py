"""Nothing is acknowledged or receipted before the database commit.

Each test has a broker of its own: the session's broker keeps other tests' retained
messages (statuses of cabinets this database does not know), which ingest receives on
subscribing and holds as well while the database cannot take them, so a count of
held messages would depend on which tests ran before.
"""

from __future__ import annotations

import json
import queue
import threading
import time

import psycopg

from smartlocker.embedded import MosquittoBroker
from tests.support.mqtt import connected

from .harness import InProcessIngest, count, event, provision, topic, wait_for


def test_no_puback_and_no_receipt_until_commit(fresh_broker: MosquittoBroker, db_url: str) -> None:
    provision(db_url, ["cab-r"])
    with (
        psycopg.connect(db_url) as blocker,
        InProcessIngest(fresh_broker.url, db_url) as ingest,
        connected(fresh_broker.host, fresh_broker.port) as cab,
    ):
        cab.subscribe(topic("cab-r", "receipts"))
        # Hold the events table: the writer's COPY waits, so its transaction cannot commit.
        blocker.execute("LOCK TABLE events IN EXCLUSIVE MODE")
        for seq in (1, 2, 3):
            cab.publish(topic("cab-r", "events"), event("cab-r", seq))
        assert ingest.worker is not None
        wait_for(lambda: ingest.worker._unacked == 3, what="3 messages held")
        time.sleep(1.0)
        assert ingest.worker._unacked == 3, "PUBACKed before the commit"
        try:
            got = cab.messages.get(timeout=0.5)
        except queue.Empty:
            got = None
        assert got is None, "receipt before the commit"
        assert count(db_url, "SELECT count(*) FROM events") == 0
        blocker.rollback()  # releases the lock: the batches commit
        upto = 0
        while upto < 3:  # receipts may come per batch (1, then 3, …)
            receipt = json.loads(cab.expect(timeout=10).payload)
            assert receipt["cabinet"] == "cab-r"
            assert receipt["upto_seq"] >= upto
            upto = receipt["upto_seq"]
            assert count(db_url, "SELECT count(*) FROM events") >= upto
        wait_for(lambda: ingest.worker._unacked == 0, what="PUBACKs after the commit")
    assert count(db_url, "SELECT count(*) FROM events") == 3


def test_database_outage_keeps_messages_until_it_returns(
    fresh_broker: MosquittoBroker, pg_cluster, db_url: str
) -> None:
    provision(db_url, ["cab-o"])
    with (
        InProcessIngest(fresh_broker.url, db_url) as ingest,
        connected(fresh_broker.host, fresh_broker.port) as cab,
    ):
        cab.subscribe(topic("cab-o", "receipts"))
        pg_cluster.stop()
        try:
            for seq in range(1, 6):
                cab.publish(topic("cab-o", "events"), event("cab-o", seq))
            assert ingest.worker is not None
            wait_for(lambda: ingest.worker._unacked == 5, what="5 messages held")
            time.sleep(0.5)
        finally:
            threading.Thread(target=pg_cluster.start).run()
        upto = 0
        while upto < 5:
            upto = json.loads(cab.expect(timeout=20).payload)["upto_seq"]
    assert count(db_url, "SELECT count(*) FROM events") == 5
