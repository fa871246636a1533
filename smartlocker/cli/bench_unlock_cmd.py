"""``smartlocker bench unlock``: the remote-unlock round trip (docs/benchmarks.md)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

__all__ = ["unlock"]


@click.command("unlock")
@click.option(
    "--sequential",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="Unlocks one at a time (0: no sequential phase)",
)
@click.option(
    "--clients",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Concurrent clients (0: no concurrent phase)",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds of the concurrent phase",
)
@click.option("--cabinets", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--compartments", type=click.IntRange(min=1), default=8, show_default=True, help="Per cabinet"
)
@click.option("--api-workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--api-threads", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--plain-postgres", is_flag=True, help="PostgreSQL without TimescaleDB")
@click.option(
    "--agent-nodelay", is_flag=True, help="TCP_NODELAY on the agents' MQTT sockets (see docs)"
)
@click.option(
    "--cabinet-kind",
    type=click.Choice(["agent", "fleet"]),
    default="agent",
    show_default=True,
    help="Real edge agents on mock pins, or the fleet simulator's in-memory cabinets",
)
@click.option(
    "--door-open-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="ms from a lock's pulse to its door opening (0: as the lock is energised)",
)
@click.option(
    "--agents-per-process",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Real agents per process (1: each cabinet its own interpreter, as on its own Pi)",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON here")
def unlock(
    sequential: int,
    clients: int,
    duration: float,
    cabinets: int,
    compartments: int,
    api_workers: int,
    api_threads: int,
    plain_postgres: bool,
    agent_nodelay: bool,
    cabinet_kind: str,
    door_open_ms: float,
    agents_per_process: int,
    out: Path | None,
) -> None:
    """HTTP unlock → MQTT → cabinets (real agents on mock pins, or the fleet simulator) →
    ack → ingest → HTTP answer."""
    from smartlocker.bench.unlock_bench import UnlockBenchConfig, run_unlock_bench

    # SIGTERM stops the private services in order, like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    report = run_unlock_bench(
        UnlockBenchConfig(
            sequential=sequential,
            clients=clients,
            duration=duration,
            cabinets=cabinets,
            compartments=compartments,
            api_workers=api_workers,
            api_threads=api_threads,
            timescaledb=not plain_postgres,
            agent_nodelay=agent_nodelay,
            cabinet_kind=cabinet_kind,
            door_open_ms=door_open_ms,
            agents_per_process=agents_per_process,
        ),
        out,
    )
    click.echo(json.dumps(report, indent=2))
