"""Benchmark: the floor of the unlock round trip's architecture on this machine.

The same hops as ``smartlocker bench unlock``, each in its own process, with nothing
else: an HTTP server thread commits a command row to PostgreSQL and publishes it at QoS 1
(waiting for the PUBACK); a "cabinet" commits it to SQLite (WAL, ``synchronous=FULL``,
like the edge agent) and publishes an ack at QoS 1; an "ingest" commits the ack with a
NOTIFY to the requesting connection, which answers the HTTP request. No signatures, no
rules, no events, no counters, no rate limits, one hand-off fewer wherever one could
go (the request's own connection LISTENs; paho's callbacks do the work). Whatever
this costs here, the real round trip cannot cost less in Python on this machine.

Two phases like the real benchmark: sequential requests (p50/p99), then N clients for
D seconds (unlocks/s), with CPU and context switches per unlock of each process.

    .venv/bin/python bench/unlock_floor.py --sequential 500 --clients 20 --duration 10
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from smartlocker.bench.cpu import CpuMeter
from smartlocker.embedded import MosquittoBroker, free_port
from smartlocker.embedded.pg_cluster import start_cluster, stop_cluster

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = "floor/cmd"
ACKS = "floor/ack"
SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_commands (
    id bigserial PRIMARY KEY,
    reply text NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    done timestamptz
)
"""


def _mqtt(url: str, name: str) -> paho.Client:
    host, port = url.rsplit(":", 1)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv5)
    client.connect(host, int(port))
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def _ready() -> None:
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin


def run_api(pg: str, mqtt: str, port: int) -> None:
    client = _mqtt(mqtt, "floor-api")
    client.loop_start()
    local = threading.local()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = psycopg.connect(pg, autocommit=True)
                local.channel = f"r{threading.get_ident()}"
                conn.execute(f"LISTEN {local.channel}")
            row = conn.execute(
                "INSERT INTO floor_commands (reply) VALUES (%s) RETURNING id", (local.channel,)
            ).fetchone()
            assert row is not None
            command = str(row[0])
            client.publish(COMMANDS, command.encode(), qos=1).wait_for_publish(5)
            outcome = None
            for note in conn.notifies(timeout=5):
                if note.payload == command:
                    outcome = "opened"
                    break
            body = json.dumps({"id": command, "outcome": outcome}).encode()
            self.send_response(200 if outcome else 504)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _ready()


def run_cabinet(mqtt: str, workdir: str) -> None:
    db = sqlite3.connect(
        Path(workdir) / "cabinet.db", isolation_level=None, check_same_thread=False
    )
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS commands (id TEXT PRIMARY KEY, at REAL)")
    client = _mqtt(mqtt, "floor-cabinet")

    def on_message(c: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        db.execute("INSERT OR IGNORE INTO commands VALUES (?, ?)", (message.payload, time.time()))
        c.publish(ACKS, message.payload, qos=1)

    client.on_message = on_message
    client.subscribe(COMMANDS, qos=1)
    client.loop_start()
    _ready()


def run_ingest(pg: str, mqtt: str) -> None:
    conn = psycopg.connect(pg, autocommit=True)
    client = _mqtt(mqtt, "floor-ingest")

    def on_message(_c: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        conn.execute(
            "WITH u AS (UPDATE floor_commands SET done = now() WHERE id = %s RETURNING reply)"
            " SELECT pg_notify(u.reply, %s) FROM u",
            (int(message.payload), message.payload.decode()),
        )

    client.on_message = on_message
    client.subscribe(ACKS, qos=1)
    client.loop_start()
    _ready()


def _connect(port: int) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _request(conn: http.client.HTTPConnection) -> float:
    start = time.perf_counter()
    conn.request("POST", "/unlock", body=b"{}", headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"unlock answered {response.status}")
    return (time.perf_counter() - start) * 1000


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["api", "cabinet", "ingest"])
    parser.add_argument("--pg")
    parser.add_argument("--mqtt")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workdir")
    parser.add_argument("--sequential", type=int, default=500)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.role == "api":
        return run_api(args.pg, args.mqtt, args.port)
    if args.role == "cabinet":
        return run_cabinet(args.mqtt, args.workdir)
    if args.role == "ingest":
        return run_ingest(args.pg, args.mqtt)

    work = Path(tempfile.mkdtemp(prefix="slfloor-", dir="/tmp"))
    work.chmod(0o711)  # the server runs as user postgres when we are root
    children: list[subprocess.Popen[str]] = []
    broker = MosquittoBroker(work / "broker")
    try:
        _, pg = start_cluster(ROOT / "scripts" / "pg-cluster.sh", work / "data", quiet=True)
        with psycopg.connect(pg, autocommit=True) as admin:
            admin.execute(SCHEMA)
        broker.start()
        mqtt = f"{broker.host}:{broker.port}"
        http_port = free_port()
        roles = {
            "api": ["--pg", pg, "--mqtt", mqtt, "--port", str(http_port)],
            "cabinet": ["--mqtt", mqtt, "--workdir", str(work)],
            "ingest": ["--pg", pg, "--mqtt", mqtt],
        }
        pids: dict[str, int] = {}
        for role, extra in roles.items():
            child = subprocess.Popen(
                [sys.executable, __file__, "--role", role, *extra],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            children.append(child)
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{role} did not start")
            pids[role] = child.pid
        pids["broker"] = broker.pid or 0
        pids["postgres"] = int((work / "data" / "postmaster.pid").read_text().split()[0])
        meter = CpuMeter(pids)
        report: dict[str, Any] = {"python": sys.version.split()[0]}

        conn = _connect(http_port)
        for _ in range(20):
            _request(conn)  # warm-up: connections, prepared paths
        if args.sequential:
            meter.start()
            times = [_request(conn) for _ in range(args.sequential)]
            cpu = meter.stop(len(times))
            report["sequential"] = {
                "n": len(times),
                "p50_ms": _pct(times, 0.5),
                "p99_ms": _pct(times, 0.99),
                "mean_ms": round(statistics.fmean(times), 2),
                "cpu_ms_per_unlock": cpu,
                "context_switches_per_unlock": meter.switches,
            }
        conn.close()

        if args.clients:
            stop_at = 0.0
            done: list[list[float]] = [[] for _ in range(args.clients)]

            def client(slot: int) -> None:
                own = _connect(http_port)
                _request(own)
                while time.perf_counter() < stop_at:
                    done[slot].append(_request(own))
                own.close()

            threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
            meter.start()
            started = time.perf_counter()
            stop_at = started + args.duration
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - started
            times = [t for slot in done for t in slot]
            report["concurrent"] = {
                "n": len(times),
                "clients": args.clients,
                "unlocks_per_s": round(len(times) / seconds, 1),
                "p50_ms": _pct(times, 0.5),
                "p99_ms": _pct(times, 0.99),
                "cpu_ms_per_unlock": meter.stop(len(times)),
                "context_switches_per_unlock": meter.switches,
            }
        text = json.dumps(report, indent=2)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
    finally:
        for child in children:
            if child.stdin is not None:
                child.stdin.close()
        for child in children:
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
        broker.stop()
        stop_cluster(ROOT / "scripts" / "pg-cluster.sh", work / "data", best_effort=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
