"""A broker killed with QoS 1 publishes in flight: the worker's publish window recovers."""

from __future__ import annotations

import os
import signal
import time

from smartlocker.cloud.db import migrate
from smartlocker.embedded import MosquittoBroker
from tests.support.mqtt import connected

from .harness import InProcessIngest, wait_for


def test_publish_window_recovers_after_broker_loses_the_session(
    fresh_broker: MosquittoBroker, db_url: str
) -> None:
    migrate(db_url)
    with InProcessIngest(fresh_broker.url, db_url) as ingest:
        worker = ingest.worker
        assert worker is not None
        assert ingest._loop is not None
        assert fresh_broker.pid is not None
        os.kill(fresh_broker.pid, signal.SIGSTOP)  # no PUBACK will come
        try:
            for i in range(40):  # twice Mosquitto's Receive Maximum of 20
                ingest._loop.call_soon_threadsafe(
                    worker.publish, f"lockers/cab-{i}/desired", b"x", 1, True
                )
            time.sleep(0.5)
        finally:
            fresh_broker.kill()  # SIGKILL works on a stopped process; the session is lost
        fresh_broker.start()
        wait_for(lambda: worker.connected.is_set(), timeout=15, what="reconnect")
        with connected(fresh_broker.host, fresh_broker.port) as sub:
            sub.subscribe("lockers/+/desired")  # retained: whatever arrived after the restart
            got = set()
            deadline = time.monotonic() + 15
            while len(got) < 40 - 18 and time.monotonic() < deadline:
                got.add(sub.expect(timeout=15).topic)
        # What was in flight at the kill is lost with the broker (the rules republish
        # desired states on the next change); the rest must get through.
        assert len(got) >= 40 - 18
        ids = worker._handler.id_generator
        wait_for(lambda: len(ids._used_ids) == 0, what="packet ids released")
