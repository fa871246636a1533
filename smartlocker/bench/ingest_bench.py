"""``smartlocker bench ingest``: the ingest pipeline against a raw relay and a naive one.

One run, one machine, everything private: a Mosquitto (fresh for every phase) and a
TimescaleDB cluster (built from Debian's source package by
``scripts/build-timescaledb.sh``, started with ``scripts/pg-cluster.sh``, so a source
checkout is needed). The load generator (:mod:`.loadgen`, its own process) plays
``cabinets`` cabinets publishing QoS 1 events with rising seq, each keeping at most
``window`` events without a receipt, like the agent's outbox. Phases:

1. ``ingest``: ``smartlocker cloud ingest`` storage path (COPY, de-duplication by the
   unique key, receipts, presence, dead letters; rules optional);
2. ``relay``: the same gmqtt worker and decoding, receipts from memory, no database;
3. ``naive``: paho, one ``INSERT … ON CONFLICT DO NOTHING`` per message;
4. ``latency``: ingest again at a fixed offered rate; publish → commit from the
   events' own ``ts`` and ``pg_xact_commit_timestamp`` (``track_commit_timestamp``),
   publish → receipt at the generator.

Rates count rows committed to the database (ingest, naive) or events receipted
(relay) during the measured window, after a warm-up; CPU is the subscriber
process's user+system time
from ``/proc`` over the same window.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from smartlocker.embedded.pg_cluster import start_cluster, stop_cluster

from .broker import BenchBroker

__all__ = ["BenchConfig", "PhaseResult", "run_bench"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class BenchConfig:
    duration: float = 60.0
    warmup: float = 5.0
    cabinets: int = 500
    window: int = 64
    latency_rate: float = 5000.0
    latency_duration: float = 30.0
    rules: str = "none"
    phases: tuple[str, ...] = ("ingest", "relay", "naive", "latency")


@dataclass
class PhaseResult:
    name: str
    events_per_s: float = 0.0
    published: int = 0
    receipted_in_window: int = 0
    rows_in_window: int | None = None
    cpu_us_per_event: float = 0.0
    broker_cpu_share: float = 0.0
    #: PostgreSQL (postmaster and all its processes) in cores over the window.
    db_cpu_share: float = 0.0
    loadgen_cpu_share: float = 0.0
    machine_busy_share: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    commit_latency_ms: dict[str, float] = field(default_factory=dict)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _cluster_cpu_seconds(datadir: Path) -> float:
    """CPU seconds of a PostgreSQL cluster's postmaster and its live children."""
    try:
        postmaster = int((datadir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return 0.0
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid = int(stat.parent.name)
        if pid == postmaster or int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs so far."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    return float(sum(parts) - idle), float(sum(parts))


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)

    def at(q: float) -> float:
        return round(v[min(len(v) - 1, int(q * len(v)))], 1)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(v[-1], 1)}


class _Cluster:
    """A private TimescaleDB cluster through the repository's scripts."""

    def __init__(self, workdir: Path) -> None:
        scripts = ROOT / "scripts"
        if not (scripts / "pg-cluster.sh").exists():
            raise RuntimeError(f"bench needs a source checkout with scripts/ (looked in {ROOT})")
        prefix = (
            os.environ.get("SMARTLOCKER_TIMESCALEDB_PREFIX")
            or subprocess.run(
                [str(scripts / "build-timescaledb.sh")], check=True, capture_output=True, text=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        self.scripts = scripts
        self.prefix = prefix
        self.base = Path(tempfile.mkdtemp(prefix="slbench-", dir="/tmp"))
        self.base.chmod(0o711)
        self.datadir = self.base / "data"
        self.port: int | None = None  # chosen at the first start, kept after

    def start(self) -> None:
        self.port, _ = start_cluster(
            self.scripts / "pg-cluster.sh",
            self.datadir,
            port=self.port,
            timescaledb=self.prefix,
            quiet=True,
        )

    def stop(self) -> None:
        stop_cluster(self.scripts / "pg-cluster.sh", self.datadir, best_effort=True)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def _prepare_database(cluster: _Cluster, cabinets: int) -> str:
    from smartlocker.cloud.db import detect_edition, migrate
    from smartlocker.cloud.rules.fleet import CompartmentSpec, create_cabinet, create_site

    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
    cluster.stop()
    cluster.start()
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE bench")
    url = cluster.url("bench")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        edition = detect_edition(conn)
        create_site(conn, "bench", "Benchmark site")
        for i in range(cabinets):
            create_cabinet(conn, f"bench-{i:05d}", "bench", [CompartmentSpec(id="c00", size="m")])
    logger.info("database ready (%s), %d cabinets", edition.value, cabinets)
    return url


def _reset(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE events, ingest_cursors, ingest_presence, dead_letters")
        return 0


def _rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0]) if row else 0


def _consumer(variant: str, broker: BenchBroker, url: str, rules: str, log: Path) -> Any:
    args = [
        sys.executable,
        "-m",
        "smartlocker.bench.consumers",
        variant,
        "--mqtt-url",
        broker.url,
        "--database-url",
        url,
        "--rules",
        rules,
    ]
    with open(log, "ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=out)


def _phase(
    name: str,
    variant: str,
    cfg: BenchConfig,
    url: str,
    work: Path,
    datadir: Path,
    *,
    rate: float | None = None,
) -> PhaseResult:
    result = PhaseResult(name)
    _reset(url)
    duration = cfg.latency_duration if rate else cfg.duration
    broker = BenchBroker(work / f"broker-{name}")
    broker.start()
    consumer = _consumer(variant, broker, url, cfg.rules, work / f"{name}.log")
    out = work / f"{name}.json"
    try:
        time.sleep(2.0)
        gen_args = [
            sys.executable,
            "-m",
            "smartlocker.bench.loadgen",
            "--port",
            str(broker.port),
            "--cabinets",
            str(cfg.cabinets),
            "--window",
            str(cfg.window),
            "--duration",
            str(cfg.warmup + duration),
            "--measure-from",
            str(cfg.warmup),
            "--out",
            str(out),
        ]
        if rate:
            gen_args += ["--rate", str(rate)]
        gen = subprocess.Popen(gen_args)
        time.sleep(cfg.warmup)
        assert broker.pid is not None
        c0, b0 = _cpu_seconds(consumer.pid), _cpu_seconds(broker.pid)
        d0 = _cluster_cpu_seconds(datadir)
        m0 = _machine_busy()
        rows0 = _rows(url) if variant != "relay" else None
        window_start = time.time()
        gen.wait()
        c1, b1 = _cpu_seconds(consumer.pid), _cpu_seconds(broker.pid)
        d1 = _cluster_cpu_seconds(datadir)
        m1 = _machine_busy()
        rows1 = _rows(url) if variant != "relay" else None
        elapsed = time.time() - window_start
        data = json.loads(out.read_text())
        timeline = data["timeline"]
        at_start = max((p for p in timeline if p[0] <= cfg.warmup + 0.5), key=lambda p: p[0])
        done = timeline[-1][2] - at_start[2]
        span = timeline[-1][0] - at_start[0]
        result.published = data["published"]
        result.receipted_in_window = done
        result.events_per_s = round(done / span, 1) if span > 0 else 0.0
        if rows0 is not None and rows1 is not None:
            # Into the database: rows committed during the window (what counts).
            result.rows_in_window = rows1 - rows0
            done = result.rows_in_window
            result.events_per_s = round(done / elapsed, 1)
        result.cpu_us_per_event = round((c1 - c0) / max(done, 1) * 1e6, 2)
        result.broker_cpu_share = round((b1 - b0) / elapsed, 3)
        result.db_cpu_share = round((d1 - d0) / elapsed, 3)
        result.loadgen_cpu_share = round(data["cpu_measured"] / elapsed, 3)
        busy = (m1[0] - m0[0]) / max(m1[1] - m0[1], 1.0)
        result.machine_busy_share = round(busy, 3)
        result.latency_ms = _percentiles(data["latencies_ms"])
        if rate and variant != "relay":
            result.commit_latency_ms = _commit_latencies(url, window_start - 0.5)
    finally:
        consumer.terminate()
        try:
            consumer.wait(30)
        except subprocess.TimeoutExpired:
            consumer.kill()
            consumer.wait()
        broker.stop()
    logger.info("%s: %s", name, result)
    return result


def _commit_latencies(url: str, since: float) -> dict[str, float]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY d), max(d)"
            " FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - ts) * 1000 AS d"
            " FROM events WHERE ts >= to_timestamp(%s)) x",
            (since,),
        ).fetchone()
    if not row or row[0] is None:
        return {}
    p50, p90, p99 = row[0]
    return {
        "p50": round(p50, 1),
        "p90": round(p90, 1),
        "p99": round(p99, 1),
        "max": round(float(row[1]), 1),
    }


def run_bench(cfg: BenchConfig, out: Path | None = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="slbench-work-"))
    cluster = _Cluster(work)
    results: dict[str, PhaseResult] = {}
    try:
        cluster.start()
        url = _prepare_database(cluster, cfg.cabinets)
        for phase in cfg.phases:
            if phase == "latency":
                results[phase] = _phase(
                    phase, "ingest", cfg, url, work, cluster.datadir, rate=cfg.latency_rate
                )
            else:
                results[phase] = _phase(phase, phase, cfg, url, work, cluster.datadir)
    finally:
        cluster.destroy()
    report: dict[str, Any] = {
        "config": asdict(cfg),
        "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()},
        "results": {k: asdict(v) for k, v in results.items()},
        "logs": str(work),
    }
    ing, rel, nai = (results.get(k) for k in ("ingest", "relay", "naive"))
    if ing and rel and rel.events_per_s:
        report["ingest_vs_relay"] = round(ing.events_per_s / rel.events_per_s, 3)
    if ing and nai and nai.events_per_s:
        report["ingest_vs_naive"] = round(ing.events_per_s / nai.events_per_s, 2)
    if out is not None:
        out.write_text(json.dumps(report, indent=2))
    return report
