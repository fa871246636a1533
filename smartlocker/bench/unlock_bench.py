"""``smartlocker bench unlock``: HTTP unlock → MQTT → a real cabinet → ack → HTTP answer.

Everything runs privately on this machine: PostgreSQL with TimescaleDB (the
repository's scripts), Mosquitto with passwords and the contract ACL, the API under
gunicorn (``smartlocker cloud api``), ingest with the real rules and its production
settings (``smartlocker cloud ingest``: acks on their own lane, events batched up to
20 ms), and real edge agents on mock pins whose doors open the instant the lock is
pulsed (:mod:`.instant_cabinet`; ``door_open_ms`` later, default 0, so the cabinet leg
is the agent's own work: a real door adds the bolt's and the person's time), or with
``cabinet_kind="fleet"`` the fleet simulator's in-memory cabinets (:mod:`.fleet_cabinets`).
Cabinets are provisioned through the API, which registers their passwords with the
broker.

Two phases, each request ``POST …/unlock?wait=5`` answered once the ack is ingested:

* sequential: one client, one request at a time (latency p50/p99);
* concurrent: N clients for D seconds, each on its own compartment (throughput).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
import requests

from smartlocker.embedded import MosquittoBroker, free_port
from smartlocker.embedded.pg_cluster import start_cluster, stop_cluster
from smartlocker.protocol import generate_private_key, private_key_pem

from .cpu import CpuMeter
from .instant_cabinet import write_agent_config

__all__ = ["CABINET_KINDS", "UnlockBenchConfig", "run_unlock_bench"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CLOUD_USER = "cloud"
CABINET_KINDS = ("agent", "fleet")


@dataclass(frozen=True)
class UnlockBenchConfig:
    sequential: int = 500
    clients: int = 20
    duration: float = 10.0
    warmup: int = 50
    cabinets: int = 4
    compartments: int = 8
    api_workers: int = 2
    api_threads: int = 16
    timescaledb: bool = True
    #: TCP_NODELAY on every socket of the agents' process from its creation (the agent
    #: sets it on its MQTT socket itself once connected; kept to rerun older comparisons).
    agent_nodelay: bool = False
    #: "agent": real edge agents on mock pins (:mod:`.instant_cabinet`); "fleet": the
    #: fleet simulator's in-memory cabinets (:mod:`.fleet_cabinets`).
    cabinet_kind: str = "agent"
    #: ms from a lock's pulse to its door opening (0: as the lock is energised; the
    #: agent still records the grant first, see :mod:`.instant_cabinet`). Agents only:
    #: the fleet simulator acks an accepted command at once.
    door_open_ms: float = 0.0
    #: Real agents per process: 1, each cabinet with its own interpreter as on its own
    #: Raspberry Pi (since 2026-11-21 23:00; before, all of them in one process).
    agents_per_process: int = 1


class _Probe:
    """Watches commands and acks on the broker (as the cloud account), with arrival times.

    Splits each round trip into the API leg (request → command on the broker), the
    cabinet leg (command → ack on the broker) and the return leg (ack → HTTP answer:
    ingest, the commit, NOTIFY, the waiting worker).
    """

    def __init__(self, host: str, port: int, username: str, password: str) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        client.username_pw_set(username, password)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.connect(host, port)
        client.loop_start()
        self._client = client
        self._ready.wait(10)

    def _on_connect(self, client: Any, *_: Any) -> None:
        client.subscribe([("lockers/+/commands", 0), ("lockers/+/acks", 0)])
        self._ready.set()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        at = time.time()
        data = json.loads(msg.payload)
        key = ("ack", data["command_id"]) if data["type"] == "ack" else ("command", data["id"])
        with self._lock:
            self.seen.setdefault(key, at)

    def legs(self, requests_: list[tuple[str, float, float]]) -> dict[str, float]:
        api, cabinet, back = [], [], []
        with self._lock:
            for command, t0, t1 in requests_:
                sent = self.seen.get(("command", command))
                acked = self.seen.get(("ack", command))
                if sent is None or acked is None:
                    continue
                api.append(sent - t0)
                cabinet.append(acked - sent)
                back.append(t1 - acked)
        if not api:
            return {}
        return {
            "request_to_command_p50_ms": round(statistics.median(api) * 1000, 2),
            "command_to_ack_p50_ms": round(statistics.median(cabinet) * 1000, 2),
            "ack_to_answer_p50_ms": round(statistics.median(back) * 1000, 2),
        }

    def close(self) -> None:
        """Stop watching (again: harmless): the concurrent phase runs without the probe,
        whose copies of every command and ack would take CPU from what is measured."""
        if self._client.is_connected():
            self._client.disconnect()
        self._client.loop_stop()


class _Client:
    """One keep-alive HTTP/1.1 connection: a light load generator.

    The bench's clients share the machine with what they measure; requests' own
    per-call work (~1 ms of CPU) would be taken from the services under test. Each
    request leaves in ONE write (``http.client`` writes the headers and the body
    separately: the server cannot start before the second write arrives, and on a
    busy machine the client's thread is not always scheduled at once between them),
    and its answer is parsed straight off the socket (:func:`_read_response`).
    """

    def __init__(self, host: str, port: int, token: str) -> None:
        self._address = (host, port)
        self._sock: socket.socket | None = None
        self._head = (
            f"Host: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
        )

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self._address, timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        return sock

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        request = (
            f"POST {path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n"
        ).encode("ascii") + body
        for attempt in (1, 2):
            try:
                sock = self._sock or self._connect()
                sock.sendall(request)
                status, data, close = _read_response(sock)
                if close:
                    self.close()
                return status, data
            except OSError:
                self.close()  # the server closed a kept-alive connection: reconnect
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _read_response(sock: socket.socket) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 response with a Content-Length: ``(status, body, server closes)``.

    Read straight off the socket: ``http.client`` parses the headers with the email
    package and reads them line by line, ~0.3 ms of the client's CPU per request
    on these machines, counted in every round trip measured.
    """
    buffer = bytearray()
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP response: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise ConnectionError(f"a response without Content-Length: {lines[0][:80]!r}")
    length = int(headers["content-length"])
    body = buffer[end + 4 :]
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        body += chunk
    close = headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0"
    return int(parts[1]), bytes(body[:length]), close


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(latencies: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in latencies]
    if not ms:  # a phase too short for a single answer
        return {"n": 0}
    return {
        "n": len(ms),
        "p50_ms": round(_percentile(ms, 0.50), 2),
        "p90_ms": round(_percentile(ms, 0.90), 2),
        "p99_ms": round(_percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


class _Processes:
    """Every service the bench starts, stopped in reverse order whatever happens."""

    def __init__(self) -> None:
        self.stack: list[Any] = []

    def add(self, stopper: Any) -> None:
        self.stack.append(stopper)

    def close(self) -> None:
        while self.stack:
            stop = self.stack.pop()
            try:
                stop()
            except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
                logger.warning("stopping a bench service: %s", exc)


def _stop_process(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _postgres(work: Path, timescaledb: bool, procs: _Processes) -> tuple[str, int]:
    scripts = ROOT / "scripts"
    if not (scripts / "pg-cluster.sh").exists():
        raise RuntimeError(f"the bench needs a source checkout with scripts/ (in {ROOT})")
    datadir = Path(tempfile.mkdtemp(prefix="slunlock-", dir="/tmp"))
    datadir.chmod(0o711)
    prefix = None
    if timescaledb:
        prefix = (
            os.environ.get("SMARTLOCKER_TIMESCALEDB_PREFIX")
            or subprocess.run(
                [str(scripts / "build-timescaledb.sh")], check=True, capture_output=True, text=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )
    _, url = start_cluster(
        scripts / "pg-cluster.sh", datadir / "data", timescaledb=prefix, quiet=True
    )

    def stop() -> None:
        stop_cluster(scripts / "pg-cluster.sh", datadir / "data", best_effort=True)
        shutil.rmtree(datadir, ignore_errors=True)

    procs.add(stop)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE smartlocker")
    db = url.rsplit("/", 1)[0] + "/smartlocker"
    if timescaledb:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    postmaster = int((datadir / "data" / "postmaster.pid").read_text().split()[0])
    return db, postmaster


def run_unlock_bench(cfg: UnlockBenchConfig, out: Path | None = None) -> dict[str, Any]:
    from smartlocker.cloud.api.auth import Role, create_key
    from smartlocker.cloud.db import detect_edition, migrate

    if cfg.cabinet_kind not in CABINET_KINDS:
        raise ValueError(f"cabinet_kind must be one of {CABINET_KINDS}, not {cfg.cabinet_kind!r}")
    smartlocker = str(Path(sys.executable).with_name("smartlocker"))
    work = Path(tempfile.mkdtemp(prefix="slbench-unlock-"))
    procs = _Processes()
    procs.add(lambda: shutil.rmtree(work, ignore_errors=True))
    try:
        db, postmaster = _postgres(work, cfg.timescaledb, procs)
        migrate(db)
        with psycopg.connect(db) as conn:
            edition = detect_edition(conn).value
            admin = create_key(conn, name="bench", role=Role.ADMIN, sites=None).token
        key_file = work / "cloud.pem"
        key_file.write_bytes(private_key_pem(generate_private_key()))
        key_file.chmod(0o600)

        cloud_password = secrets.token_urlsafe(16)
        broker = MosquittoBroker(
            work / "broker", users={CLOUD_USER: cloud_password}, cloud_users=[CLOUD_USER]
        )
        broker.start()
        procs.add(broker.stop)
        pid_file = work / "mosquitto.pid"
        pid_file.write_text(str(broker.pid))
        cloud_url = f"mqtt://{CLOUD_USER}:{cloud_password}@{broker.host}:{broker.port}"

        port = free_port()
        env = {
            **os.environ,
            "SMARTLOCKER_DATABASE_URL": db,
            "SMARTLOCKER_MQTT_URL": cloud_url,
            "SMARTLOCKER_SIGNING_KEY": str(key_file),
            "SMARTLOCKER_API_BIND": f"127.0.0.1:{port}",
            "SMARTLOCKER_MOSQUITTO_PASSWD": str(broker.password_path),
            "SMARTLOCKER_MOSQUITTO_PID": str(pid_file),
            "SMARTLOCKER_API_UNLOCKS_PER_MINUTE": "1000000",
        }
        with open(work / "api.log", "wb") as log:
            api = subprocess.Popen(
                [
                    smartlocker,
                    "--log-level",
                    "WARNING",
                    "cloud",
                    "api",
                    "--workers",
                    str(cfg.api_workers),
                    "--threads",
                    str(cfg.api_threads),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.add(lambda: _stop_process(api, signal.SIGINT))
        with open(work / "ingest.log", "wb") as log:
            ingest = subprocess.Popen(
                [
                    smartlocker,
                    "--log-level",
                    "WARNING",
                    "cloud",
                    "ingest",
                    "--client-id",
                    "ingest-bench",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.add(lambda: _stop_process(ingest, signal.SIGTERM))
        base = f"http://127.0.0.1:{port}"
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {admin}"
        _wait(lambda: _ready(session, base, api), 30, "the API")

        session.post(
            base + "/api/v1/sites", json={"id": "bench", "name": "Bench"}
        ).raise_for_status()
        targets: list[tuple[str, str]] = []
        configs: list[Path] = []
        simulated: dict[str, Any] = {}
        for i in range(cfg.cabinets):
            cabinet = f"bench-{i}"
            ids = [f"C{j}" for j in range(cfg.compartments)]
            r = session.post(
                base + "/api/v1/cabinets",
                json={
                    "id": cabinet,
                    "site": "bench",
                    "compartments": [{"id": c, "size": "m"} for c in ids],
                },
            )
            r.raise_for_status()
            creds = r.json()["credentials"]
            public = work / f"{cabinet}.pub"
            public.write_text(creds["cloud_public_key_pem"])
            simulated[cabinet] = {"password": creds["mqtt_password"], "compartments": ids}
            path = write_agent_config(
                work / f"{cabinet}.toml",
                cabinet,
                mqtt_url=broker.url,
                username=creds["mqtt_username"],
                password=creds["mqtt_password"],
                cloud_public_key=public,
                code_key=creds["code_key_hex"],
                data_dir=work / f"{cabinet}-data",
                compartments=ids,
            )
            configs.append(path)
            targets += [(cabinet, c) for c in ids]
        if cfg.cabinet_kind == "fleet":
            spec = work / "fleet.json"
            spec.write_text(
                json.dumps(
                    {
                        "host": broker.host,
                        "port": broker.port,
                        "public_key": str(public),
                        "door_open_s": 0.005,
                        "cabinets": simulated,
                    }
                )
            )
            command = [sys.executable, "-m", "smartlocker.bench.fleet_cabinets", str(spec)]
        else:
            command = [
                sys.executable,
                "-m",
                "smartlocker.bench.instant_cabinet",
                *(["--nodelay"] if cfg.agent_nodelay else []),
                "--door-open-ms",
                str(cfg.door_open_ms),
                "--per-process",
                str(cfg.agents_per_process),
                *map(str, configs),
            ]
        with open(work / "cabinets.log", "wb") as log:
            cabinets = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        procs.add(lambda: _stop_process(cabinets, signal.SIGTERM))
        _wait(
            lambda: all(
                session.get(f"{base}/api/v1/cabinets/{c}").json()["online"]
                for c in {t[0] for t in targets}
            ),
            30,
            "the cabinets to come online",
        )

        assert broker.pid is not None
        meter = CpuMeter(
            {
                "api": api.pid,
                "ingest": ingest.pid,
                "cabinets": cabinets.pid,
                "broker": broker.pid,
                "postgres": postmaster,
            }
        )
        probe = _Probe(broker.host, broker.port, CLOUD_USER, cloud_password)
        procs.add(probe.close)
        timeline: list[tuple[str, float, float]] = []
        failure_kinds: dict[str, int] = {}
        failures_lock = threading.Lock()

        def unlock(s: _Client, cabinet: str, compartment: str) -> tuple[float, bool]:
            w0, t0 = time.time(), time.perf_counter()
            status, body = s.post(
                f"/api/v1/cabinets/{cabinet}/compartments/{compartment}/unlock?wait=5",
                b'{"reason": "benchmark"}',
            )
            elapsed = time.perf_counter() - t0
            data = json.loads(body) if status in (200, 202) else {}
            ok = status == 200 and data.get("status") == "succeeded"
            if status in (200, 202):
                timeline.append((data["id"], w0, time.time()))
            if not ok:  # say what went wrong (status, outcome, reason or problem type)
                what = (
                    f"{status} {data.get('status')} {data.get('outcome')} "
                    f"{data.get('outcome_reason')}"
                    if data
                    else f"{status} {body[:120].decode(errors='replace')}"
                )
                with failures_lock:
                    failure_kinds[what] = failure_kinds.get(what, 0) + 1
            return elapsed, ok

        client0 = _Client("127.0.0.1", port, admin)
        procs.add(client0.close)
        for i in range(cfg.warmup):
            unlock(client0, *targets[i % len(targets)])
        sequential: dict[str, Any] | None = None
        if cfg.sequential > 0:
            latencies: list[float] = []
            failures = 0
            logger.info("sequential phase: %d unlocks", cfg.sequential)
            meter.start()
            for i in range(cfg.sequential):
                elapsed, ok = unlock(client0, *targets[i % len(targets)])
                latencies.append(elapsed)
                failures += not ok
            cpu = meter.stop(cfg.sequential)
            sequential = {**_summary(latencies), "failures": failures}
            sequential["cpu_ms_per_unlock"] = cpu
            sequential["context_switches_per_unlock"] = meter.switches
            sequential["legs"] = probe.legs(timeline[-cfg.sequential :])
            sequential["breakdown_ms"] = _breakdown(db, cfg.sequential)
        probe.close()

        concurrent: dict[str, Any] | None = None
        if cfg.clients > 0 and cfg.duration > 0:
            results: list[list[tuple[float, bool]]] = [[] for _ in range(cfg.clients)]
            stop_at = time.perf_counter() + cfg.duration

            # Client i takes compartment i // cabinets of cabinet i % cabinets: the
            # clients spread over the cabinets (5 each with 20 clients and 4 cabinets),
            # not the first cabinets' compartments in a row.
            spread = [
                targets[c * cfg.compartments + j]
                for j in range(cfg.compartments)
                for c in range(cfg.cabinets)
            ]

            def client(index: int) -> None:
                mine = spread[index % len(spread)]
                s = _Client("127.0.0.1", port, admin)
                try:
                    while time.perf_counter() < stop_at:
                        results[index].append(unlock(s, *mine))
                finally:
                    s.close()

            threads = [threading.Thread(target=client, args=(i,)) for i in range(cfg.clients)]
            logger.info("concurrent phase: %d clients, %.0f s", cfg.clients, cfg.duration)
            meter.start()
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - started
            flat = [r for per in results for r in per]
            succeeded = sum(1 for _, ok in flat if ok)
            cpu = meter.stop(len(flat))
            concurrent = {
                **_summary([e for e, _ in flat]),
                "clients": cfg.clients,
                "seconds": round(wall, 2),
                "succeeded": succeeded,
                "failures": len(flat) - succeeded,
                "unlocks_per_s": round(succeeded / wall, 1),
                "cpu_ms_per_unlock": cpu,
                "context_switches_per_unlock": meter.switches,
            }
        report = {
            "failure_kinds": failure_kinds,
            "config": asdict(cfg),
            "edition": edition,
            "cpus": os.cpu_count(),
            "sequential": sequential,
            "concurrent": concurrent,
        }
        if out is not None:
            out.write_text(json.dumps(report, indent=2) + "\n")
            if failure_kinds:  # keep the services' logs to say why
                logs = out.with_name(out.stem + "-logs")
                logs.mkdir(exist_ok=True)
                for log_file in work.glob("*.log"):
                    shutil.copy(log_file, logs / log_file.name)
        return report
    finally:
        procs.close()


#: The legs' medians over the last N succeeded commands. A command's pulse is its first
#: ``unlocked`` event: the ``unlocked`` events are grouped by their ``command_id`` in one
#: pass (each body parsed once), then joined to the commands. (A subquery per command
#: over all events took minutes once a run had a few thousand commands.) A command
#: without a pulse still counts in the legs that do not need one.
_BREAKDOWN = """
    WITH c AS (
        SELECT id, created_at, sent_at, finished_at FROM commands
        WHERE status = 'succeeded' ORDER BY created_at DESC LIMIT %s
    ), pulses AS MATERIALIZED (
        SELECT body->>'command_id' AS id, min(ts) AS pulse FROM events
        WHERE type = 'unlocked' GROUP BY 1
    ), p AS (
        SELECT c.*, pulses.pulse FROM c LEFT JOIN pulses ON pulses.id = c.id
    )
    SELECT percentile_cont(0.5) WITHIN GROUP
               (ORDER BY extract(epoch FROM sent_at - created_at)),
           percentile_cont(0.5) WITHIN GROUP
               (ORDER BY extract(epoch FROM pulse - created_at)),
           percentile_cont(0.5) WITHIN GROUP
               (ORDER BY extract(epoch FROM finished_at - pulse)),
           percentile_cont(0.5) WITHIN GROUP
               (ORDER BY extract(epoch FROM finished_at - created_at))
    FROM p
"""


def _breakdown(db: str, last: int) -> dict[str, float]:
    """Medians (ms) of each leg of the last ``last`` commands, from the rows' own clocks.

    created → sent: the API signs and publishes (PUBACK awaited; only for commands not
    awaited, which the API marks ``sent``: an awaited one goes from ``created`` to its
    outcome); created → pulse: that, MQTT to the agent, verification, the agent's durable
    record, the pulse (``unlocked`` event ts); pulse → final: door opens, the ack is
    stored and sent, ingest commits it.
    """
    with psycopg.connect(db) as conn:
        row = conn.execute(_BREAKDOWN, (last,)).fetchone()
    names = ("created_to_sent", "created_to_pulse", "pulse_to_final", "created_to_final")
    return {
        n: round(float(v) * 1000, 2)
        for n, v in zip(names, row or (), strict=False)
        if v is not None
    }


def _ready(session: requests.Session, base: str, api: subprocess.Popen[bytes]) -> bool:
    if api.poll() is not None:
        raise RuntimeError("the API exited during start (see its log)")
    try:
        return session.get(base + "/readyz", timeout=2).status_code == 200
    except (requests.ConnectionError, requests.Timeout):  # still starting (a busy machine)
        return False


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
