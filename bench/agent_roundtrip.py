"""Benchmark: the edge agent's hop alone, side by side with this machine's floor for it.

A scripted cloud (one paho client, TCP_NODELAY, as the API's publisher) sends signed
unlock commands at QoS 1 to one cabinet over a private Mosquitto and waits for each
ack, receipting the cabinet's events every 20 ms as ingest does. The cabinet is, in
turns within one run:

* ``agent``: the real edge agent on mock pins whose doors open as the lock is pulsed
  and close 5 ms after it is released (``smartlocker.bench.instant_cabinet``, as in
  ``smartlocker bench unlock``), in a process of its own: signature, expiry and replay
  checks, three SQLite commits, the ``unlocked``/``door_opened``/``door_closed`` events
  and the ack;
* ``floor``: a process that does only what the hop cannot skip: it takes the command
  at QoS 1, commits one row to SQLite (WAL, ``synchronous=FULL``) and publishes an
  ack at QoS 1 from paho's callback;
* ``duties``: a process that does what DESIGN.md's guarantees ask of a cabinet for one
  unlock, and nothing else, all in paho's callback: the signature, the command's model,
  its cabinet, expiry and counter, then three SQLite commits (the command's record with
  ``unlocked``, then ``door_opened`` with the ack's result, then ``door_closed``), three
  events and the ack at QoS 1, and a commit per receipt that drops the receipted events.
  No threads, no GPIO, no doors: what the agent costs over it is its own design's.

Each is measured one command at a time and with ``--inflight`` commands outstanding;
reported per turn: round trips per second, p50/p99 (command published → ack
received), the cabinet's and the broker's CPU ms and context switches per unlock, the
events the cloud saw per command, and the agent's figures over the floor's and over the
duties' of the same round. Without the API, ingest and
PostgreSQL on the same two cores, an agent change shows here in a few seconds.

    .venv/bin/python bench/agent_roundtrip.py [--unlocks 1500] [--inflight 8] \\
        [--rounds 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from smartlocker.bench.cpu import CpuMeter
from smartlocker.bench.instant_cabinet import write_agent_config
from smartlocker.embedded import MosquittoBroker
from smartlocker.protocol import (
    Channel,
    Receipt,
    TopicScheme,
    UnlockCommand,
    decode,
    encode,
    generate_private_key,
    load_public_key,
    public_key_pem,
    sign,
    verify_payload,
)

COMPARTMENTS = [f"C{j}" for j in range(8)]
TOPICS = TopicScheme()
RECEIPT_EVERY_S = 0.02
#: Round trips before each cabinet is measured (not counted).
WARMUP_UNLOCKS = 100


def _nodelay(client: paho.Client) -> None:
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _durable_db(path: Path) -> sqlite3.Connection:
    """SQLite as the agent keeps it: WAL, ``synchronous=FULL``; statements autocommit."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def _serve(
    mqtt: str,
    cabinet: str,
    channels: tuple[Channel, ...],
    on_message: Callable[[paho.Client, Any, paho.MQTTMessage], None],
) -> None:
    """Connect as ``cabinet``, subscribe to its ``channels`` and answer from paho's
    thread; says "ready" once subscribed, and runs until the parent closes our stdin."""
    host, port = mqtt.rsplit(":", 1)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=cabinet, protocol=paho.MQTTv5)
    subscribed = threading.Event()
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(host, int(port))
    _nodelay(client)
    client.subscribe([(str(TOPICS.topic(cabinet, ch)), 1) for ch in channels])
    client.loop_start()
    if not subscribed.wait(30):  # the broker drops a command no subscription awaits
        raise SystemExit(f"{cabinet}'s subscription was not acknowledged")
    print("ready", flush=True)
    sys.stdin.read()
    client.loop_stop()


def run_floor(mqtt: str, workdir: str, cabinet: str) -> None:
    """The floor cabinet: one durable SQLite commit and an ack per command."""
    db = _durable_db(Path(workdir) / "floor.db")
    db.execute("CREATE TABLE IF NOT EXISTS commands (id TEXT PRIMARY KEY, at REAL)")
    acks = str(TOPICS.topic(cabinet, Channel.ACKS))

    def on_message(c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        command_id = json.loads(message.payload)["id"]
        db.execute("INSERT OR IGNORE INTO commands VALUES (?, ?)", (command_id, time.time()))
        c.publish(acks, json.dumps({"command_id": command_id}), qos=1)

    _serve(mqtt, cabinet, (Channel.COMMANDS,), on_message)


def run_duties(mqtt: str, workdir: str, cabinet: str, public_key: str) -> None:
    """The duties cabinet: an unlock's durable work and messages, nothing more."""
    key = load_public_key(Path(public_key))
    db = _durable_db(Path(workdir) / f"{cabinet}.db")
    db.execute(
        "CREATE TABLE IF NOT EXISTS commands (id TEXT PRIMARY KEY, counter INT, result TEXT)"
    )
    db.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, payload BLOB)")
    events = str(TOPICS.topic(cabinet, Channel.EVENTS))
    acks = str(TOPICS.topic(cabinet, Channel.ACKS))
    seq = 0
    counters: set[int] = set()

    @contextmanager
    def commit() -> Iterator[None]:
        """One durable transaction (the connection autocommits each statement otherwise)."""
        db.execute("BEGIN")
        yield
        db.execute("COMMIT")

    def message(kind: str, **fields: Any) -> bytes:
        head = {"v": 1, "id": uuid.uuid4().hex, "ts": datetime.now(UTC).isoformat()}
        return json.dumps({**head, "cabinet": cabinet, "type": kind, **fields}).encode()

    def event(kind: str, compartment: str) -> bytes:
        nonlocal seq
        seq += 1
        payload = message(kind, seq=seq, compartment=compartment)
        db.execute("INSERT INTO outbox VALUES (?, ?)", (seq, payload))
        return payload

    def on_message(c: paho.Client, _u: Any, delivery: paho.MQTTMessage) -> None:
        if delivery.topic.endswith("/receipts"):
            upto = json.loads(delivery.payload)["upto_seq"]
            db.execute("DELETE FROM outbox WHERE seq <= ?", (upto,))
            return
        verify_payload(delivery.payload, key)
        command = decode(Channel.COMMANDS, delivery.payload)
        # Its cabinet, not expired, not replayed (the agent's checks, at their cheapest).
        if command.cabinet != cabinet or command.expires <= datetime.now(UTC):
            raise SystemExit(f"the duties cabinet got a command it must refuse: {command.id}")
        if command.counter in counters:
            raise SystemExit(f"the duties cabinet got a replayed counter: {command.counter}")
        counters.add(command.counter)
        with commit():
            db.execute("INSERT INTO commands VALUES (?, ?, NULL)", (command.id, command.counter))
            unlocked = event("unlocked", command.compartment)
        with commit():
            opened = event("door_opened", command.compartment)
            db.execute("UPDATE commands SET result = 'opened' WHERE id = ?", (command.id,))
        c.publish(acks, message("ack", command_id=command.id, outcome="opened"), qos=1)
        c.publish(events, unlocked, qos=1)
        c.publish(events, opened, qos=1)
        with commit():
            closed = event("door_closed", command.compartment)
        c.publish(events, closed, qos=1)

    _serve(mqtt, cabinet, (Channel.COMMANDS, Channel.RECEIPTS), on_message)


class _Cloud:
    """Sends signed unlocks, collects acks, receipts events (every RECEIPT_EVERY_S)."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.key = generate_private_key()
        self._acks: dict[str, float] = {}
        self._cond = threading.Condition()
        self._top: dict[str, int] = {}
        #: Cabinets that published a ``reported`` snapshot: an agent sends its first one
        #: after it subscribed to its commands (its birth, before).
        self._subscribed: set[str] = set()
        self._counter: dict[str, int] = {}
        self._stop = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-cloud", protocol=paho.MQTTv5
        )
        listening = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: listening.set()
        self.client.connect(broker.host, broker.port)
        _nodelay(self.client)
        channels = (Channel.ACKS, Channel.EVENTS, Channel.REPORTED)
        self.client.subscribe([(str(TOPICS.all_cabinets(c)), 1) for c in channels])
        self.client.loop_start()
        if not listening.wait(30):
            raise RuntimeError("the cloud's subscription was not acknowledged")
        self._receipts = threading.Thread(target=self._receipt_loop, daemon=True)
        self._receipts.start()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        topic = TOPICS.parse(msg.topic)
        cabinet = topic.cabinet
        body = json.loads(msg.payload)
        with self._cond:
            if topic.channel is Channel.ACKS:
                self._acks[body["command_id"]] = time.perf_counter()
                self._cond.notify_all()
            elif topic.channel is Channel.EVENTS:
                self._top[cabinet] = max(self._top.get(cabinet, 0), int(body["seq"]))
            elif topic.channel is Channel.REPORTED:
                self._subscribed.add(cabinet)
                self._cond.notify_all()

    def _receipt_loop(self) -> None:
        sent: dict[str, int] = {}
        while not self._stop.wait(RECEIPT_EVERY_S):
            with self._cond:
                due = {c: s for c, s in self._top.items() if s > sent.get(c, 0)}
            for cabinet, seq in due.items():
                receipt = Receipt(cabinet=cabinet, ts=datetime.now(UTC), upto_seq=seq)
                receipts = str(TOPICS.topic(cabinet, Channel.RECEIPTS))
                self.client.publish(receipts, encode(receipt), qos=1)
                sent[cabinet] = seq

    def top_seq(self, cabinet: str, settle: float = 0.5) -> int:
        """The highest event seq seen from ``cabinet``, once its events stopped coming."""
        last = -1
        while True:
            with self._cond:
                top = self._top.get(cabinet, 0)
            if top == last:
                return top
            last = top
            time.sleep(settle)

    def wait_subscribed(self, cabinet: str, timeout: float = 30.0) -> None:
        """Until the agent listens for commands (the broker drops one sent before)."""
        with self._cond:
            if not self._cond.wait_for(lambda: cabinet in self._subscribed, timeout):
                raise RuntimeError(f"{cabinet} did not subscribe to its commands")

    def _command(self, cabinet: str, index: int) -> tuple[str, bytes]:
        self._counter[cabinet] = self._counter.get(cabinet, 0) + 1
        now = datetime.now(UTC)
        command = sign(
            UnlockCommand(
                cabinet=cabinet,
                compartment=COMPARTMENTS[index % len(COMPARTMENTS)],
                counter=self._counter[cabinet],
                ts=now,
                expires=now + timedelta(seconds=60),
            ),
            self.key,
        )
        return command.id, encode(command)

    def run(self, cabinet: str, unlocks: int, inflight: int) -> list[float]:
        """``unlocks`` round trips, at most ``inflight`` outstanding; their seconds."""
        topic = str(TOPICS.topic(cabinet, Channel.COMMANDS))
        pending: dict[str, float] = {}
        times: list[float] = []
        sent = 0
        while sent < unlocks or pending:
            while sent < unlocks and len(pending) < inflight:
                command_id, payload = self._command(cabinet, sent)
                pending[command_id] = time.perf_counter()
                self.client.publish(topic, payload, qos=1)
                sent += 1
            with self._cond:
                if not self._cond.wait_for(lambda: any(c in self._acks for c in pending), 10):
                    raise RuntimeError(f"no ack from {cabinet} within 10 s")
                done = [(c, self._acks.pop(c)) for c in list(pending) if c in self._acks]
            for command_id, acked in done:
                times.append(acked - pending.pop(command_id))
        return times

    def close(self) -> None:
        self._stop.set()
        self._receipts.join(5)
        self.client.loop_stop()
        self.client.disconnect()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def _turn(
    kind: str,
    cabinet: str,
    work: Path,
    broker: MosquittoBroker,
    cloud: _Cloud,
    public: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Start one cabinet of ``kind``, measure it sequentially and with commands in flight."""
    if kind == "agent":
        command = [
            sys.executable,
            "-m",
            "smartlocker.bench.instant_cabinet",
            "--log-level",
            "WARNING",
            str(
                write_agent_config(
                    work / f"{cabinet}.toml",
                    cabinet,
                    mqtt_url=broker.url,
                    cloud_public_key=public,
                    code_key="00" * 32,
                    data_dir=work / cabinet,
                    compartments=COMPARTMENTS,
                )
            ),
        ]
    else:
        mqtt = f"{broker.host}:{broker.port}"
        command = [sys.executable, __file__, "--role", kind, "--mqtt", mqtt]
        command += ["--workdir", str(work), "--cabinet", cabinet, "--public-key", str(public)]
    # The floor and duties say "ready" on stdout; nobody reads the agent's (it writes none).
    output = subprocess.PIPE if kind != "agent" else subprocess.DEVNULL
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=output, text=True)
    try:
        if kind == "agent":
            cloud.wait_subscribed(cabinet)
        else:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the {kind} cabinet did not start")
        cloud.run(cabinet, WARMUP_UNLOCKS, 1)
        meter = CpuMeter({"cabinet": child.pid, "broker": broker.pid or 0})
        result: dict[str, Any] = {}
        for mode, inflight in (("sequential", 1), ("inflight", args.inflight)):
            meter.start()
            started = time.perf_counter()
            times = cloud.run(cabinet, args.unlocks, inflight)
            seconds = time.perf_counter() - started
            result[mode] = {
                "inflight": inflight,
                "unlocks_per_s": round(len(times) / seconds, 1),
                "p50_ms": _pct(times, 0.5),
                "p99_ms": _pct(times, 0.99),
                "cpu_ms_per_unlock": meter.stop(len(times)),
                "context_switches_per_unlock": meter.switches,
            }
        # Events the cloud saw from this cabinet (its highest seq), per command it was sent.
        result["events_per_command"] = round(
            cloud.top_seq(cabinet) / (WARMUP_UNLOCKS + 2 * args.unlocks), 2
        )
        return result
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()


def _ratios(agent: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    """The agent's figures over another cabinet's (the floor's, the duties'), per mode."""
    out: dict[str, Any] = {}
    for mode in ("sequential", "inflight"):
        a, f = agent[mode], floor[mode]
        out[mode] = {
            "p50": round(a["p50_ms"] / f["p50_ms"], 2),
            "unlocks_per_s": round(a["unlocks_per_s"] / f["unlocks_per_s"], 2),
            "cabinet_cpu": round(
                a["cpu_ms_per_unlock"]["cabinet"] / max(f["cpu_ms_per_unlock"]["cabinet"], 1e-3),
                2,
            ),
            "cabinet_switches": round(
                a["context_switches_per_unlock"]["cabinet"]
                / max(f["context_switches_per_unlock"]["cabinet"], 1e-3),
                2,
            ),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["floor", "duties"])
    parser.add_argument("--public-key")
    parser.add_argument("--mqtt")
    parser.add_argument("--workdir")
    parser.add_argument("--cabinet")
    parser.add_argument("--unlocks", type=int, default=1500)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.role == "floor":
        return run_floor(args.mqtt, args.workdir, args.cabinet)
    if args.role == "duties":
        return run_duties(args.mqtt, args.workdir, args.cabinet, args.public_key)

    work = Path(tempfile.mkdtemp(prefix="slagentrt-", dir="/tmp"))
    broker = MosquittoBroker(work / "broker")
    cloud: _Cloud | None = None
    try:
        broker.start()
        cloud = _Cloud(broker)
        public = work / "cloud.pub"
        public.write_bytes(public_key_pem(cloud.key))
        report: dict[str, Any] = {"python": sys.version.split()[0], "rounds": []}
        for n in range(args.rounds):
            turns = {
                kind: _turn(kind, f"rt-{kind}-{n}", work, broker, cloud, public, args)
                for kind in (
                    ("agent", "duties", "floor") if n % 2 == 0 else ("floor", "duties", "agent")
                )
            }
            report["rounds"].append(
                {
                    **turns,
                    "agent_over_floor": _ratios(turns["agent"], turns["floor"]),
                    "agent_over_duties": _ratios(turns["agent"], turns["duties"]),
                }
            )
        text = json.dumps(report, indent=2)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
    finally:
        if cloud is not None:
            cloud.close()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
