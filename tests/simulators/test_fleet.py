"""The fleet simulator speaks the real protocol to a real broker."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from smartlocker.embedded.mosquitto import MosquittoBroker
from smartlocker.protocol import (
    REPLAY_WINDOW,
    Channel,
    Receipt,
    TopicScheme,
    UnlockCommand,
    encode,
    generate_private_key,
    sign,
    utcnow,
)
from smartlocker.simulators.fleet import SimulatedFleet
from tests.support.mqtt import MqttTestClient, connected

KEY = generate_private_key()
SCHEME = TopicScheme()


class FleetThread:
    """Runs a fleet's event loop in a thread, so the test can act as the cloud."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def __enter__(self) -> FleetThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.fleet.start(), self.loop).result(60)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fleet.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _messages(client: MqttTestClient, count: int, timeout: float = 10.0) -> list[Any]:
    return [client.expect(timeout) for _ in range(count)]


def _unlock(cabinet: str, counter: int, **overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "cabinet": cabinet,
        "compartment": "A1",
        "counter": counter,
        "expires": utcnow() + timedelta(seconds=30),
    }
    fields.update(overrides)
    return encode(sign(UnlockCommand(**fields), KEY))


@pytest.fixture
def fleet(mqtt_broker: MosquittoBroker) -> Iterator[FleetThread]:
    cabinets = {f"sim-{i:03d}": ["A1", "A2"] for i in range(50)}
    sim = SimulatedFleet(
        host=mqtt_broker.host,
        port=mqtt_broker.port,
        public_key=KEY.public_key(),
        cabinets=cabinets,
        heartbeat_s=1.0,
        door_open_s=0.1,
        receipt_timeout_s=0.5,
    )
    with FleetThread(sim) as running:
        yield running


def test_fifty_cabinets_connect_boot_and_send_heartbeats(
    mqtt_broker: MosquittoBroker, fleet: FleetThread
) -> None:
    with connected(mqtt_broker.host, mqtt_broker.port) as cloud:
        cloud.subscribe(SCHEME.all_cabinets(Channel.TELEMETRY))
        cloud.subscribe(SCHEME.all_cabinets(Channel.STATUS))
        seen: set[str] = set()
        online: set[str] = set()
        deadline = time.monotonic() + 10
        while (len(seen) < 50 or len(online) < 50) and time.monotonic() < deadline:
            msg = cloud.expect()
            body = json.loads(msg.payload)
            if body["type"] == "telemetry":
                seen.add(body["cabinet"])
            elif body["online"]:
                online.add(body["cabinet"])
    assert len(seen) == 50
    assert len(online) == 50
    assert fleet.fleet.stats.connected == 50


def test_signed_unlock_opens_once_and_bad_commands_are_rejected(
    mqtt_broker: MosquittoBroker, fleet: FleetThread
) -> None:
    cabinet = "sim-007"
    with connected(mqtt_broker.host, mqtt_broker.port) as cloud:
        cloud.subscribe(SCHEME.topic(cabinet, Channel.ACKS))
        good = _unlock(cabinet, 1)
        commands = SCHEME.topic(cabinet, Channel.COMMANDS)
        cloud.publish(commands, good)
        cloud.publish(commands, good)  # a duplicate delivery: same ack, no second opening
        cloud.publish(commands, _unlock(cabinet, 1, compartment="A2"))  # replayed counter
        cloud.publish(commands, _unlock("sim-008", 2))  # another cabinet's
        forged = generate_private_key()
        cloud.publish(
            commands,
            encode(
                sign(
                    UnlockCommand(
                        cabinet=cabinet,
                        compartment="A1",
                        counter=9,
                        expires=utcnow() + timedelta(seconds=30),
                    ),
                    forged,
                )
            ),
        )
        cloud.publish(commands, b"{not json")
        acks = [json.loads(m.payload) for m in _messages(cloud, 5)]
    outcomes = [(a["outcome"], a["reason"]) for a in acks]
    assert outcomes[:2] == [("opened", None), ("opened", None)]
    assert acks[0] == acks[1]
    assert sorted(outcomes[2:]) == [
        ("rejected", "bad_signature"),
        ("rejected", "replayed"),
        ("rejected", "wrong_cabinet"),
    ]
    assert fleet.fleet.stats.commands_accepted == 1


def test_counters_out_of_order_within_the_window_are_accepted_once_each(
    mqtt_broker: MosquittoBroker, fleet: FleetThread
) -> None:
    cabinet = "sim-012"
    top = REPLAY_WINDOW + 100
    order = [top, top - 2, top - REPLAY_WINDOW + 1, top - 1]
    with connected(mqtt_broker.host, mqtt_broker.port) as cloud:
        cloud.subscribe(SCHEME.topic(cabinet, Channel.ACKS))
        commands = SCHEME.topic(cabinet, Channel.COMMANDS)
        for counter in order:
            cloud.publish(commands, _unlock(cabinet, counter))
        for counter in order:  # signed anew: the same counter under another id
            cloud.publish(commands, _unlock(cabinet, counter))
        cloud.publish(commands, _unlock(cabinet, top - REPLAY_WINDOW))
        acks = [json.loads(m.payload) for m in _messages(cloud, 9)]
    assert [(a["outcome"], a["reason"]) for a in acks] == [("opened", None)] * 4 + [
        ("rejected", "replayed")
    ] * 5
    assert fleet.call(lambda: fleet.fleet.cabinets[cabinet].replay.high_water) == top


def test_events_are_kept_until_receipted_and_resent(
    mqtt_broker: MosquittoBroker, fleet: FleetThread
) -> None:
    cabinet = "sim-011"
    sim = fleet.fleet.cabinets[cabinet]
    with connected(mqtt_broker.host, mqtt_broker.port) as cloud:
        cloud.subscribe(SCHEME.topic(cabinet, Channel.EVENTS))
        cloud.publish(SCHEME.topic(cabinet, Channel.COMMANDS), _unlock(cabinet, 1))
        # unlocked, door_opened, door_closed (boot was before we subscribed) ...
        _wait(lambda: fleet.call(lambda: len(sim.outbox)) == 4)
        # ... and with no receipt, they come again after the receipt timeout.
        seqs = [json.loads(m.payload)["seq"] for m in _messages(cloud, 6)]
        assert seqs[:3] == [2, 3, 4]
        assert 1 in seqs[3:]
        receipt = Receipt(cabinet=cabinet, upto_seq=4)
        cloud.publish(SCHEME.topic(cabinet, Channel.RECEIPTS), encode(receipt))
        _wait(lambda: fleet.call(lambda: len(sim.outbox)) == 0)


def test_the_fleet_command_runs_cabinets_until_its_duration(
    mqtt_broker: MosquittoBroker, tmp_path: Any
) -> None:
    import subprocess
    import sys

    from smartlocker.protocol import public_key_pem

    (tmp_path / "cloud.pub").write_bytes(public_key_pem(KEY))
    with connected(mqtt_broker.host, mqtt_broker.port) as cloud:
        cloud.subscribe(SCHEME.all_cabinets(Channel.STATUS))
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "smartlocker.cli",
                "simulate",
                "fleet",
                "--mqtt-url",
                mqtt_broker.url,
                "--public-key",
                str(tmp_path / "cloud.pub"),
                "--cabinets",
                "5",
                "--id-prefix",
                "cli",
                "--duration",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        states: dict[str, list[bool]] = {}
        while sum(len(v) for v in states.values()) < 10:
            body = json.loads(cloud.expect().payload)
            if body["cabinet"].startswith("cli-"):
                states.setdefault(body["cabinet"], []).append(body["online"])
    assert sorted(states) == [f"cli-{i:04d}" for i in range(1, 6)]
    assert all(v == [True, False] for v in states.values())


def test_the_fleet_command_refuses_a_bad_key_clearly(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from smartlocker.cli import main

    (tmp_path / "bad.pub").write_text("not a key")
    result = CliRunner().invoke(
        main, ["simulate", "fleet", "--public-key", str(tmp_path / "bad.pub")]
    )
    assert result.exit_code == 2
    assert "not a PEM public key" in result.output


def test_the_unlock_benchs_fleet_cabinets_answer_commands_and_stop_on_sigterm(
    mqtt_broker: MosquittoBroker, tmp_path: Any
) -> None:
    """``python -m smartlocker.bench.fleet_cabinets SPEC`` (``bench unlock --cabinet-kind
    fleet``): the cabinets of the spec, with their compartments, ack a signed command."""
    import signal
    import subprocess
    import sys

    from smartlocker.protocol import public_key_pem

    (tmp_path / "cloud.pub").write_bytes(public_key_pem(KEY))
    spec = {
        "host": mqtt_broker.host,
        "port": mqtt_broker.port,
        "public_key": str(tmp_path / "cloud.pub"),
        "door_open_s": 0.01,
        "cabinets": {"bfc-1": {"password": "unused", "compartments": ["C0", "C1"]}},
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    with connected(mqtt_broker.host, mqtt_broker.port) as cloud:
        cloud.subscribe(SCHEME.topic("bfc-1", Channel.STATUS))
        cloud.subscribe(SCHEME.topic("bfc-1", Channel.ACKS))
        proc = subprocess.Popen(
            [sys.executable, "-m", "smartlocker.bench.fleet_cabinets", str(tmp_path / "spec.json")]
        )
        try:
            assert json.loads(cloud.expect(30).payload)["online"] is True
            commands = SCHEME.topic("bfc-1", Channel.COMMANDS)
            cloud.publish(commands, _unlock("bfc-1", 1, compartment="C1"))
            cloud.publish(commands, _unlock("bfc-1", 2, compartment="A1"))  # not in the spec
            acks = [json.loads(m.payload) for m in _messages(cloud, 2)]
            assert [(a["compartment"], a["outcome"], a["reason"]) for a in acks] == [
                ("C1", "opened", None),
                ("A1", "rejected", "unknown_compartment"),
            ]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
