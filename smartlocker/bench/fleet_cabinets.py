"""The fleet simulator's cabinets as the unlock benchmark's cabinets (``--cabinet-kind fleet``).

:class:`~smartlocker.simulators.fleet.SimulatedFleet` speaks the protocol with the
agent's own command checks (signature, cabinet, expiry, replay) but keeps its state in
memory: no SQLite, no GPIO, one asyncio loop for every cabinet. It acks an accepted
command at once (``opened``) and reports ``unlocked`` and ``door_opened``, then
``door_closed`` ``door_open_s`` later. The benchmark uses it to measure the cloud's
side of an unlock with less cabinet CPU in the way than real agents cost.

    python -m smartlocker.bench.fleet_cabinets SPEC.json

SPEC: ``{"host", "port", "public_key" (PEM path), "door_open_s", "cabinets":
{id: {"password", "compartments": [...]}}}``. Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import Any

from smartlocker.protocol import load_public_key
from smartlocker.simulators.fleet import SimulatedFleet

__all__ = ["fleet_from_spec", "main"]

logger = logging.getLogger(__name__)


def fleet_from_spec(spec: dict[str, Any]) -> SimulatedFleet:
    """The fleet a SPEC describes (see the module's docstring)."""
    cabinets: dict[str, Any] = spec["cabinets"]
    return SimulatedFleet(
        host=spec["host"],
        port=int(spec["port"]),
        public_key=load_public_key(Path(spec["public_key"])),
        cabinets={name: list(c["compartments"]) for name, c in cabinets.items()},
        passwords={name: c["password"] for name, c in cabinets.items()},
        door_open_s=float(spec.get("door_open_s", 0.005)),
        heartbeat_s=30.0,
    )


async def _run(fleet: SimulatedFleet) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await fleet.start()
    logger.info("%d simulated cabinets connected", len(fleet.cabinets))
    await stop.wait()
    await fleet.stop()
    logger.info("simulated cabinets stopped: %s", fleet.stats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_run(fleet_from_spec(json.loads(args.spec.read_text()))))


if __name__ == "__main__":
    main()
