"""``smartlocker simulate``: simulated cabinets against a real broker and cloud."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import click

from smartlocker.protocol import ProtocolError, load_public_key

__all__ = ["simulate"]

logger = logging.getLogger(__name__)


@click.group()
def simulate() -> None:
    """Simulated cabinets: a light fleet for load, virtual cabinets for scenarios."""


@simulate.command()
@click.option(
    "--mqtt-url", envvar="SMARTLOCKER_MQTT_URL", default="mqtt://127.0.0.1:1883", show_default=True
)
@click.option(
    "--public-key",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="The cloud's Ed25519 public key (PEM).",
)
@click.option("--cabinets", default=100, show_default=True, help="How many cabinets.")
@click.option("--compartments", default=12, show_default=True, help="Compartments per cabinet.")
@click.option("--id-prefix", default="sim", show_default=True)
@click.option(
    "--credentials",
    type=click.Path(exists=True, path_type=Path),
    help="JSON object cabinet id → MQTT password, for a broker with ACLs.",
)
@click.option("--heartbeat", default=30.0, show_default=True, help="Seconds between beats.")
@click.option("--duration", default=0.0, help="Stop after this many seconds (0: until Ctrl-C).")
def fleet(
    mqtt_url: str,
    public_key: Path,
    cabinets: int,
    compartments: int,
    id_prefix: str,
    credentials: Path | None,
    heartbeat: float,
    duration: float,
) -> None:
    """Thousands of protocol-speaking cabinets in one process."""
    from smartlocker.simulators.fleet import SimulatedFleet

    url = urlsplit(mqtt_url)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        raise click.BadParameter("mqtt:// or mqtts://host:port", param_hint="--mqtt-url")
    try:
        key = load_public_key(public_key)
    except ProtocolError as exc:
        raise click.BadParameter(str(exc), param_hint="--public-key") from exc
    passwords: dict[str, str] = {}
    if credentials is not None:
        passwords = json.loads(credentials.read_text())
    width = max(len(str(cabinets)), 4)
    names = [f"{id_prefix}-{i:0{width}d}" for i in range(1, cabinets + 1)]
    labels = [f"{chr(65 + i // 10)}{i % 10 + 1}" for i in range(compartments)]
    sim = SimulatedFleet(
        host=url.hostname,
        port=url.port or (8883 if url.scheme == "mqtts" else 1883),
        ssl=url.scheme == "mqtts",
        public_key=key,
        cabinets={name: labels for name in names},
        passwords=passwords or ({n: unquote(url.password) for n in names} if url.password else {}),
        heartbeat_s=heartbeat,
    )
    asyncio.run(_run_fleet(sim, duration))


async def _run_fleet(sim: object, duration: float) -> None:
    from smartlocker.simulators.fleet import SimulatedFleet

    assert isinstance(sim, SimulatedFleet)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    await sim.start()
    logger.info(
        "fleet of %d cabinets connected in %.1f s", len(sim.cabinets), time.monotonic() - started
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=duration or None)
    await sim.stop()
    logger.info("fleet stopped: %s", sim.stats)


def _fault_spec(kind: str, spec: str, fields: int) -> list[str]:
    parts = spec.split(":")
    if not 1 <= len(parts) <= fields or not parts[0]:
        raise click.BadParameter(
            f"{spec!r}: CABINET[:AT_S[:FOR_S{':OFFSET_S' if fields == 4 else ''}]]",
            param_hint=f"--{kind}",
        )
    try:
        [float(p) for p in parts[1:]]
    except ValueError:
        raise click.BadParameter(f"{spec!r}: times are seconds", param_hint=f"--{kind}") from None
    return parts


@simulate.command()
@click.option(
    "--database-url",
    envvar="SMARTLOCKER_DATABASE_URL",
    help="Use this PostgreSQL (default: an embedded server in the work dir).",
)
@click.option("--site", default="sim", show_default=True, help="Site id (cabinets SITE-01 …).")
@click.option("--cabinets", default=5, show_default=True, help="Virtual cabinets to run.")
@click.option(
    "--day", "day_s", default=20.0, show_default=True, help="Real seconds one simulated day lasts."
)
@click.option("--days", default=1.0, show_default=True)
@click.option("--parcels-per-day", default=24, show_default=True)
@click.option("--hold-days", default=0.5, show_default=True, help="Pickup deadline after deposit.")
@click.option("--seed", default=1, show_default=True)
@click.option(
    "--power-cut",
    "power_cuts",
    multiple=True,
    metavar="CABINET[:AT_S[:FOR_S]]",
    help="Kill that cabinet's agent (SIGKILL) AT_S seconds in, power it FOR_S later"
    " (default 2:40). Repeatable.",
)
@click.option(
    "--slow-clock",
    "slow_clocks",
    multiple=True,
    metavar="CABINET[:AT_S[:FOR_S[:OFFSET_S]]]",
    help="Set that cabinet's wall clock OFFSET_S off (default 2:30:-90). Repeatable.",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    help="Keep logs and state here (default: a fresh temporary directory).",
)
def scenario(
    database_url: str | None,
    site: str,
    cabinets: int,
    day_s: float,
    days: float,
    parcels_per_day: int,
    hold_days: float,
    seed: int,
    power_cuts: tuple[str, ...],
    slow_clocks: tuple[str, ...],
    workdir: Path | None,
) -> None:
    """A compressed day on virtual cabinets, with faults; exits 1 if anything is unexplained."""
    import tempfile

    from smartlocker.simulators.api_client import ApiProblem
    from smartlocker.simulators.scenario import PowerCut, Scenario, ScenarioConfig, SlowClock
    from smartlocker.simulators.stack import Stack, StackError

    # The people's progress lines tell the story; the components' INFO chatter would bury them.
    for noisy in ("smartlocker.edge_agent", "smartlocker.simulators", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    names = {f"{site}-{n:02d}" for n in range(1, cabinets + 1)}
    cuts: list[PowerCut] = []
    for spec in power_cuts:
        name, *given = _fault_spec("power-cut", spec, 3)
        t = [float(x) for x in given] + [2.0, 40.0][len(given) :]
        cuts.append(PowerCut(name, at_s=t[0], for_s=t[1]))
    slows: list[SlowClock] = []
    for spec in slow_clocks:
        name, *given = _fault_spec("slow-clock", spec, 4)
        t = [float(x) for x in given] + [2.0, 30.0, -90.0][len(given) :]
        slows.append(SlowClock(name, at_s=t[0], for_s=t[1], offset_s=t[2]))
    unknown = ({c.cabinet for c in cuts} | {s.cabinet for s in slows}) - names
    if unknown:
        raise click.BadParameter(f"no such cabinet: {', '.join(sorted(unknown))}")
    if {c.cabinet for c in cuts} & {s.cabinet for s in slows}:
        raise click.BadParameter("a cabinet gets a power cut or a slow clock, not both")
    work = workdir or Path(tempfile.mkdtemp(prefix="smartlocker-scenario-"))
    stack = Stack(work, database_url=database_url, open_window_s=2.0, held_open_s=2.0)
    click.echo(f"starting the stack in {work} …")
    try:
        stack.start()
        stack.provision(site, "Simulated station", cabinets, processes={c.cabinet for c in cuts})
    except (StackError, ApiProblem) as exc:
        stack.stop()
        raise click.ClickException(f"the stack did not start: {exc}") from exc
    assert stack.api is not None
    assert stack.inbox is not None
    try:
        config = ScenarioConfig(
            site=site,
            day_s=day_s,
            days=days,
            parcels_per_day=parcels_per_day,
            hold_days=hold_days,
            settle_s=60,
            seed=seed,
            power_cuts=tuple(cuts),
            slow_clocks=tuple(slows),
        )
        run = Scenario(
            config,
            stack.api,
            stack.kiosks(site),
            stack.inbox,
            faults=stack,
            on_progress=lambda line: click.echo(f"  {time.strftime('%H:%M:%S')} {line}"),
        )
        summary = run.run()
        stack.wait_drained(30)
        summary.events_produced = stack.events_produced()
        summary.events_stored = stack.events_stored()
    finally:
        stack.stop()
    for line in summary.lines():
        click.echo(f"  {line}")
    bad = (
        summary.failures
        or summary.unexpected
        or summary.unexplained_alerts
        or any(not f.shown for f in summary.faults)
        or summary.events_produced != summary.events_stored
    )
    if bad:
        raise SystemExit(1)
