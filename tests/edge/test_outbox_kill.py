"""The outbox survives SIGKILL of the agent and of the broker (issue 3, acceptance 1).

Events flow from simulated door traffic; the agent (or the broker) is killed at
random moments. The test's cloud accepts an event only when its ``seq`` is the
next one and receipts it; at the end every event the database ever numbered has
reached the cloud, in order, without a gap, and the database is intact.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from smartlocker.edge_agent import Agent, parse_config
from smartlocker.edge_agent.store import last_seq_given
from smartlocker.simulators.virtual_cabinet import VirtualWorld
from tests.edge import toml_out
from tests.edge.conftest import config_dict

CYCLES = 50


def db_state(path: Path) -> tuple[int, int, str]:
    """(last seq given out, outbox depth, integrity) read from a second connection."""
    db = sqlite3.connect(path, timeout=10)
    try:
        last = last_seq_given(db)
        depth = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()
    return last, depth, integrity


def spawn(config_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smartlocker.simulators.virtual_cabinet",
            "--config",
            str(config_path),
            "--no-kiosk",
            *extra,
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_agent_sigkill_cycles_lose_nothing(
    tmp_path, mqtt_broker, public_key_file, make_cloud, cabinet_id
) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4)))
    data = config_dict(
        tmp_path / "data",
        public_key_file,
        mqtt_broker.url,
        receipt_timeout_s=1.0,
        cabinet=cabinet_id,
    )
    config_path = toml_out.write(tmp_path / "cabinet.toml", data)
    db_path = tmp_path / "data" / "agent.sqlite3"
    cloud = make_cloud(mqtt_broker.host, mqtt_broker.port)
    for cycle in range(CYCLES):
        boots = len(cloud.events_of("boot"))
        proc = spawn(config_path, "--traffic", "0.01")
        try:
            # Half the cycles die while starting up, half while events flow.
            if cycle % 2:
                cloud.wait_event("boot", count=boots + 1, timeout=20)
            time.sleep(rng.uniform(0.05, 0.3))
        finally:
            proc.kill()
            _, stderr = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
        assert cloud.gaps == [], cloud.gaps
        if db_path.exists():
            assert db_state(db_path)[2] == "ok"
    # A last, clean run delivers whatever is left.
    boots = len(cloud.events_of("boot"))
    proc = spawn(config_path)
    try:
        cloud.wait_event("boot", count=boots + 1, timeout=20)
        cloud.wait(
            lambda: db_state(db_path)[0] == cloud.committed and db_state(db_path)[1] == 0,
            timeout=30,
            what="every event delivered and receipted",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    last_seq, _depth, integrity = db_state(db_path)
    assert integrity == "ok"
    cloud.wait(lambda: cloud.committed == last_seq, what="the shutdown event")
    assert cloud.gaps == []
    assert [e.seq for e in cloud.events] == list(range(1, last_seq + 1))
    assert cloud.events[-1].type == "shutdown"
    boots = cloud.events_of("boot")
    assert len(boots) >= CYCLES // 2
    assert len(cloud.events_of("door_opened")) > CYCLES


def test_broker_sigkill_cycles_lose_nothing(
    tmp_path, fresh_broker, public_key_file, make_cloud, cabinet_id
) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4)))
    config = parse_config(
        config_dict(
            tmp_path / "data",
            public_key_file,
            fresh_broker.url,
            receipt_timeout_s=0.5,
            cabinet=cabinet_id,
        )
    )
    # The broker's death also drops this subscriber's subscription: what the agent sends
    # before the cloud is subscribed again is lost on the way and must come again (after a
    # receipt timeout), in order. Events beyond the next seq are dropped, not committed.
    cloud = make_cloud(fresh_broker.host, fresh_broker.port, strict=False)
    factory = MockFactory()
    agent = Agent(config, pin_factory=factory, kiosk=False)
    world = VirtualWorld(config, factory, traffic_s=0.01, hold_s=0.05)
    try:
        agent.start()
        world.start()
        for _ in range(CYCLES):
            time.sleep(rng.uniform(0.05, 0.3))
            fresh_broker.kill()
            time.sleep(rng.uniform(0.0, 0.1))
            fresh_broker.start()
        world.stop()
        assert agent.store is not None
        store = agent.store
        cloud.wait(
            lambda: (
                agent.cabinet is not None
                and agent.cabinet.call(lambda: (store.last_seq, store.outbox_depth()))
                == (cloud.committed, 0)
            ),
            timeout=30,
            what="every event delivered and receipted",
        )
    finally:
        world.stop()
        agent.stop("test over")
        factory.reset()
    last_seq, _depth, integrity = db_state(config.database_path)
    assert integrity == "ok"
    assert cloud.gaps == []
    assert [e.seq for e in cloud.events] == list(range(1, len(cloud.events) + 1))
    assert cloud.committed >= last_seq - 1  # all but possibly the shutdown event
    assert cloud.early > 0  # the broker's deaths did cost deliveries, which came again
    assert len(cloud.events_of("door_opened")) > CYCLES
    assert agent.link is None  # stopped
