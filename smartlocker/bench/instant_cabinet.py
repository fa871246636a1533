"""Real edge agents whose doors open the instant their locks are pulsed (for benchmarks).

Each compartment's lock pin is a gpiozero mock pin wired to its door pin: energising
the lock opens the door ``open_after`` later (1 ms: after the agent has recorded its
grant, so the opening counts as granted) and closes it ``hold`` later. Nothing polls,
unlike the simulator's world (a 5 ms loop), so the doors add next to no latency.
Everything else is the real agent (signature and replay checks, SQLite outbox, acks,
events). One process runs several agents:

    python -m smartlocker.bench.instant_cabinet CONFIG.toml [CONFIG.toml ...]
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPin

from smartlocker.edge_agent import Agent, AgentConfig, load_config

__all__ = ["instant_factory", "main", "no_delay_connections"]

logger = logging.getLogger(__name__)


class _LockPin(MockPin):  # type: ignore[misc]
    """A lock output whose rising edge opens ``door`` shortly, then closes it."""

    def __init__(
        self,
        factory: Any,
        info: Any,
        door: Any = None,
        open_after: float = 0.001,
        hold: float = 0.005,
    ) -> None:
        super().__init__(factory, info)
        self.door = door
        self.open_after = open_after
        self.hold = hold

    def _change_state(self, value: Any) -> Any:
        changed = super()._change_state(value)
        if value and self.door is not None:
            timer = threading.Timer(self.open_after, self._open)
            timer.daemon = True
            timer.start()
        return changed

    def _open(self) -> None:
        self.door.drive_high()
        timer = threading.Timer(self.hold, self.door.drive_low)
        timer.daemon = True
        timer.start()


def instant_factory(config: AgentConfig) -> MockFactory:
    """Mock pins where each lock opens its door (sensor high = open) right away."""
    factory = MockFactory()
    for c in config.compartments:
        door = factory.pin(c.door_pin)
        factory.pin(c.lock_pin, pin_class=_LockPin, door=door)
    return factory


def no_delay_connections() -> None:
    """Every TCP connection this process opens sends small packets at once.

    paho-mqtt (the agent's MQTT client) does not set TCP_NODELAY; Nagle's algorithm
    then holds each small PUBLISH until the previous one's delayed TCP ACK (~40 ms on
    Linux). This is the bench's ``--agent-nodelay``; the agent itself should set it.
    """
    original = socket.create_connection

    def create_connection(*args: Any, **kwargs: Any) -> socket.socket:
        sock = original(*args, **kwargs)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    socket.create_connection = create_connection


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--nodelay", action="store_true", help="TCP_NODELAY on MQTT sockets")
    args = parser.parse_args(argv)
    if args.nodelay:
        no_delay_connections()
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
