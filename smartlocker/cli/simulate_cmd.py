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
