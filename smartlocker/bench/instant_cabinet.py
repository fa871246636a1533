"""Real edge agents whose doors open the instant their locks are pulsed (for benchmarks).

Each compartment's lock pin is a gpiozero ``MockConnectedPin`` wired to its door pin:
energising the lock drives the door sensor open at once, and the end of the pulse
closes it. Everything else is the real agent (signature and replay checks, SQLite
outbox, acks, events). One process runs several agents:

    python -m smartlocker.bench.instant_cabinet CONFIG.toml [CONFIG.toml ...]
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from gpiozero.pins.mock import MockConnectedPin, MockFactory

from smartlocker.edge_agent import Agent, AgentConfig, load_config

__all__ = ["instant_factory", "main"]

logger = logging.getLogger(__name__)


def instant_factory(config: AgentConfig) -> MockFactory:
    """Mock pins where each lock drives its door sensor directly."""
    factory = MockFactory()
    for c in config.compartments:
        door = factory.pin(c.door_pin)
        factory.pin(c.lock_pin, pin_class=MockConnectedPin, input_pin=door)
    return factory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    agents = []
    for path in args.configs:
        config = load_config(path)
        agent = Agent(config, pin_factory=instant_factory(config), kiosk=False)
        agent.start()
        agents.append(agent)
    done = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        while not done.wait(1.0):
            pass
    finally:
        for agent in agents:
            agent.stop("benchmark over")


if __name__ == "__main__":
    main()
