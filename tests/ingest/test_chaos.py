"""10,000 events through SIGKILLed ingest, a SIGKILLed broker and a PostgreSQL restart.

The cabinets behave like the agent's outbox (resend what no receipt covers); after
the storm, the table must hold every distinct event exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from smartlocker.embedded import MosquittoBroker
from smartlocker.protocol import generate_private_key, private_key_pem
from tests.support.pg import PgCluster

from .cabinets import OutboxFleet
from .harness import count, provision

CABINETS = [f"chaos-{i:02d}" for i in range(20)]
EVENTS = 10_000


class IngestProcess:
    """``smartlocker cloud ingest`` as a child process with a stable client id."""

    def __init__(self, mqtt_url: str, database_url: str, log: Path, key: Path) -> None:
        self.args = [
            sys.executable,
            "-c",
            "from smartlocker.cli import main; main()",
            "--log-level",
            "WARNING",
            "cloud",
            "ingest",
            "--signing-key",
            str(key),
            "--mqtt-url",
            mqtt_url,
            "--database-url",
            database_url,
            "--client-id",
            f"chaos-{uuid.uuid4().hex[:6]}",
            "--share-group",
            f"chaos{uuid.uuid4().hex[:6]}",
            "--batch-delay",
            "0.01",
        ]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=out)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.mark.slow
def test_ten_thousand_events_survive_kills_and_restarts(
    fresh_broker: MosquittoBroker, pg_cluster: PgCluster, db_url: str, tmp_path: Path
) -> None:
    provision(db_url, CABINETS)
    key = tmp_path / "cloud.pem"
    key.write_bytes(private_key_pem(generate_private_key()))
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "4")))
    ingest = IngestProcess(fresh_broker.url, db_url, tmp_path / "ingest.log", key)
    ingest.start()
    time.sleep(1.0)
    fleet = OutboxFleet(fresh_broker.host, fresh_broker.port, CABINETS)
    # Chaos at random points of the stream (as fractions of the events published).
    storm = sorted(
        [
            (rng.uniform(0.1, 0.3), "kill ingest"),
            (rng.uniform(0.35, 0.5), "kill broker"),
            (rng.uniform(0.55, 0.7), "restart postgres"),
            (rng.uniform(0.75, 0.9), "kill ingest"),
        ]
    )
    try:
        for cabinet in CABINETS:
            fleet.emit(cabinet, boot=True)
        for n in range(EVENTS - len(CABINETS)):
            fleet.emit(rng.choice(CABINETS))
            if storm and n >= storm[0][0] * EVENTS:
                _, what = storm.pop(0)
                if what == "kill ingest":
                    time.sleep(rng.uniform(0, 0.3))
                    ingest.kill()
                    ingest.start()
                elif what == "kill broker":
                    fresh_broker.kill()
                    fresh_broker.start()
                else:
                    pg_cluster.restart()
            if n % 200 == 0:
                time.sleep(0.02)  # about 10,000 events/s: the storm hits mid-stream
        fleet.settle(timeout=60)
    finally:
        fleet.close()
        ingest.stop()
    log = (tmp_path / "ingest.log").read_text()
    assert fleet.resends > 0, "the storm should have made cabinets resend"
    # gmqtt logs a broker's reset connection with a traceback (a WARNING); ours
    # must have logged no error.
    at = log.find(" ERROR smartlocker")
    assert at < 0, log[max(0, at - 600) : at + 2500]
    assert ingest.kills == 2
    distinct = sum(fleet.last_seq.values())
    assert distinct == EVENTS
    assert count(db_url, "SELECT count(*) FROM events") == distinct
    assert count(db_url, "SELECT count(*) FROM (SELECT DISTINCT cabinet, seq FROM events) e") == (
        distinct
    )
    for cabinet, last in fleet.last_seq.items():
        rows = count(
            db_url,
            "SELECT count(*) FROM events WHERE cabinet = %s AND seq BETWEEN 1 AND %s",
            (cabinet, last),
        )
        assert rows == last, cabinet
    assert count(db_url, "SELECT count(*) FROM dead_letters") == 0
