"""``smartlocker bench``: benchmarks that start their own services (see docs/benchmarks.md)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

__all__ = ["bench"]

logger = logging.getLogger(__name__)


@click.group()
def bench() -> None:
    """Benchmarks (need a source checkout: they start private services with scripts/)."""


@bench.command("ingest")
@click.option("--duration", default=60.0, show_default=True, help="Measured seconds per variant")
@click.option("--warmup", default=5.0, show_default=True, help="Seconds before measuring")
@click.option("--cabinets", default=500, show_default=True, help="Simulated cabinets")
@click.option(
    "--window",
    default=64,
    show_default=True,
    help="Events a cabinet may have without a receipt (its outbox in flight)",
)
@click.option(
    "--latency-rate",
    default=5000.0,
    show_default=True,
    help="Offered events/s of the latency phase",
)
@click.option("--latency-duration", default=30.0, show_default=True)
@click.option(
    "--rules",
    type=click.Choice(["none", "real"]),
    default="none",
    show_default=True,
    help="Run ingest with the business rules too (they query per event)",
)
@click.option("--phases", default="ingest,relay,naive,latency", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON here")
def ingest_bench(
    duration: float,
    warmup: float,
    cabinets: int,
    window: int,
    latency_rate: float,
    latency_duration: float,
    rules: str,
    phases: str,
    out: Path | None,
) -> None:
    """Ingest into TimescaleDB vs. a raw gmqtt relay vs. a naive paho INSERT-per-message."""
    from smartlocker.bench.ingest_bench import BenchConfig, run_bench

    cfg = BenchConfig(
        duration=duration,
        warmup=warmup,
        cabinets=cabinets,
        window=window,
        latency_rate=latency_rate,
        latency_duration=latency_duration,
        rules=rules,
        phases=tuple(p.strip() for p in phases.split(",") if p.strip()),
    )
    report = run_bench(cfg, out)
    results = report["results"]
    click.echo(f"machine: {report['machine']}")
    click.echo(
        f"{'variant':<9} {'events/s':>10} {'cpu us/ev':>10} {'broker':>7} "
        f"{'loadgen':>8} {'db':>5} {'busy':>6}  publish->receipt ms"
    )
    for name, r in results.items():
        click.echo(
            f"{name:<9} {r['events_per_s']:>10.0f} {r['cpu_us_per_event']:>10.1f} "
            f"{r['broker_cpu_share']:>7.2f} {r['loadgen_cpu_share']:>8.2f} "
            f"{r.get('db_cpu_share', 0.0):>5.2f} "
            f"{r['machine_busy_share']:>6.2f}  {json.dumps(r['latency_ms'])}"
        )
    if "latency" in results:
        click.echo(
            f"publish->commit ms at {latency_rate:.0f}/s: "
            f"{json.dumps(results['latency']['commit_latency_ms'])}"
        )
    for key in ("ingest_vs_relay", "ingest_vs_naive"):
        if key in report:
            click.echo(f"{key}: {report[key]}")


def _register_unlock() -> None:
    """``smartlocker bench unlock`` lives in its own module (the API's)."""
    from .bench_unlock_cmd import unlock

    bench.add_command(unlock)


_register_unlock()
