"""Real edge agents whose doors open the instant their locks are pulsed (for benchmarks).

Each compartment's lock pin is a gpiozero mock pin wired to its door pin: energising the
lock opens the door ``open_after`` later (default 0: as the lock is energised), and the
door closes ``hold`` after the lock is released (never while the bolt is still drawn: a
grant the agent gives without a new pulse, because the lock still pulses, finds its door
open, as a person waiting at the cabinet would). The door pins are driven by one thread
per process (:class:`DoorDriver`), never by the thread that pulses the lock, as
gpiozero's own thread reports a real door: the agent's door callback queues the edge
for its worker, which records it after the grant it is recording, so even an instant
opening counts as granted (a real door opens tens of milliseconds after the bolt
moves). Nothing polls, unlike the simulator's world (a 5 ms loop), and no thread is
started per pulse, so the doors add next to no latency.
Everything else is the real agent (signature and replay checks, SQLite outbox, acks,
events).

Each cabinet is its own Raspberry Pi: given several configurations, the process starts
one child process per agent (``--per-process N`` puts N agents in each, sharing one
interpreter lock, as the benchmark did before 2026-11-21 23:00) and stops them all on
SIGTERM or SIGINT:

    python -m smartlocker.bench.instant_cabinet [--door-open-ms MS] [--per-process N] \\
        CONFIG.toml [...]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPin

from smartlocker.edge_agent import Agent, AgentConfig, load_config
from smartlocker.simulators._toml import dumps

__all__ = [
    "DoorDriver",
    "instant_factory",
    "main",
    "no_delay_connections",
    "write_agent_config",
]

logger = logging.getLogger(__name__)

_MODULE = "smartlocker.bench.instant_cabinet"

#: How long a door stays open (s) after its lock is released, before the driver closes it.
HOLD_S = 0.005


class DoorDriver:
    """One daemon thread that drives door pins at given times (no thread per pulse)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="bench-doors", daemon=True)
        self._thread.start()

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` on the driver's thread at ``when`` (``time.monotonic``)."""
        with self._cond:
            wakes_sooner = not self._due or when < self._due[0][0]
            heapq.heappush(self._due, (when, next(self._order), action))
            if wakes_sooner:  # else the thread wakes before ``when`` anyway
                self._cond.notify()

    def close(self) -> None:
        """Stop the thread; actions still due are dropped."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(5.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._due or self._due[0][0] > time.monotonic()):
                    self._cond.wait(self._due[0][0] - time.monotonic() if self._due else None)
                if self._closed:
                    return
                _, _, action = heapq.heappop(self._due)
            try:
                action()
            except Exception:  # a door of an agent that stopped: keep driving the others
                logger.exception("bench door action failed")


class _LockPin(MockPin):  # type: ignore[misc]
    """A lock output whose rising edge opens ``door`` ``open_after`` later; its falling
    edge closes the door ``hold`` later (or ``hold`` after the opening, if that is later).
    """

    def __init__(
        self,
        factory: Any,
        info: Any,
        door: Any = None,
        driver: DoorDriver | None = None,
        open_after: float = 0.0,
        hold: float = HOLD_S,
    ) -> None:
        super().__init__(factory, info)
        self.door = door
        self.driver = driver
        self.open_after = open_after
        self.hold = hold
        self._opens = 0.0

    def _change_state(self, value: Any) -> Any:
        changed = super()._change_state(value)
        if changed and self.door is not None and self.driver is not None:
            now = time.monotonic()
            if value:
                self._opens = now + self.open_after
                self.driver.at(self._opens, self.door.drive_high)
            else:
                # Closing at a fixed time after the rise instead let a pulse that ended
                # late (its ending thread kept waiting on a busy machine) outlast the
                # door: the agent then granted without a new pulse, and no door opened.
                self.driver.at(max(now, self._opens) + self.hold, self.door.drive_low)
        return changed


def write_agent_config(
    path: Path,
    cabinet: str,
    *,
    mqtt_url: str,
    cloud_public_key: Path,
    code_key: str,
    data_dir: Path,
    compartments: Sequence[str],
    username: str | None = None,
    password: str | None = None,
) -> Path:
    """Write the configuration a benchmark's agent runs with to ``path``: quick
    reconnects, 2 ms pulses, no debounce; compartment *j*'s lock on pin 2 + *j*, its door
    on the pin as many further on as there are compartments."""
    config: dict[str, Any] = {
        "cabinet": cabinet,
        "mqtt_url": mqtt_url,
        **({"mqtt_username": username} if username is not None else {}),
        **({"mqtt_password": password} if password is not None else {}),
        "cloud_public_key": str(cloud_public_key),
        "code_key": code_key,
        "data_dir": str(data_dir),
        "kiosk_bind": "127.0.0.1:0",
        "telemetry_interval_s": 30.0,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 1.0,
        "compartments": [
            {
                "id": c,
                "lock_pin": 2 + j,
                "door_pin": 2 + len(compartments) + j,
                "pulse_ms": 2,
                "max_pulse_ms": 50,
                "debounce_ms": 0,
                "open_window_s": 2.0,
                "held_open_s": 60.0,
            }
            for j, c in enumerate(compartments)
        ],
    }
    path.write_text(dumps(config))
    return path


def instant_factory(
    config: AgentConfig,
    *,
    open_after: float = 0.0,
    hold: float = HOLD_S,
    driver: DoorDriver | None = None,
) -> MockFactory:
    """Mock pins where each lock opens its door (sensor high = open) ``open_after`` s later.

    ``open_after`` 0 opens the door as the lock is energised; the agent still sees the
    opening only once it has recorded the grant (see the module's docstring).
    """
    driver = driver or DoorDriver()
    factory = MockFactory()
    for c in config.compartments:
        door = factory.pin(c.door_pin)
        factory.pin(
            c.lock_pin,
            pin_class=_LockPin,
            door=door,
            driver=driver,
            open_after=open_after,
            hold=hold,
        )
    return factory


def no_delay_connections() -> None:
    """Every TCP connection this process opens sends small packets at once.

    paho-mqtt (the agent's MQTT client) does not set TCP_NODELAY; Nagle's algorithm
    would hold each small PUBLISH until the previous one's delayed TCP ACK (~40 ms on
    Linux). The agent sets it on its socket once connected (``edge_agent/link.py``);
    this, the bench's ``--agent-nodelay``, sets it from each socket's creation on, as
    the bench did before the agent did.
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
    parser.add_argument(
        "--door-open-ms",
        type=float,
        default=0.0,
        help="ms from a lock's pulse to its door opening (0: at once)",
    )
    parser.add_argument(
        "--per-process",
        type=int,
        default=1,
        help="agents per process (1: each in its own, as on its own Raspberry Pi)",
    )
    args = parser.parse_args(argv)
    if args.per_process < 1:
        parser.error("--per-process must be 1 or more")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    done = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    groups = [
        args.configs[i : i + args.per_process]
        for i in range(0, len(args.configs), args.per_process)
    ]
    if len(groups) > 1:
        _supervise(groups, _child_options(args), done)
        return
    if args.nodelay:
        no_delay_connections()
    agents = []
    driver = DoorDriver()
    for path in args.configs:
        config = load_config(path)
        factory = instant_factory(config, open_after=args.door_open_ms / 1000.0, driver=driver)
        agent = Agent(config, pin_factory=factory, kiosk=False)
        agent.start()
        agents.append(agent)
    try:
        while not done.wait(1.0):
            pass
    finally:
        for agent in agents:
            agent.stop("benchmark over")


def _child_options(args: argparse.Namespace) -> list[str]:
    """The options of this run, for its children (without the configurations)."""
    return [
        "--log-level",
        args.log_level,
        "--door-open-ms",
        str(args.door_open_ms),
        *(["--nodelay"] if args.nodelay else []),
    ]


def _supervise(groups: list[list[Path]], options: list[str], done: threading.Event) -> None:
    """Run each group of agents in a child process until ``done``; then stop them all.

    A child that dies is reported and not restarted: the benchmark sees its cabinets go
    offline and says so.
    """
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                _MODULE,
                *options,
                "--per-process",
                str(len(group)),
                *map(str, group),
            ]
        )
        for group in groups
    ]
    try:
        while not done.wait(1.0):
            for child in children:
                if child.poll() is not None:
                    logger.error("agents process %d ended (%s)", child.pid, child.returncode)
                    children.remove(child)
                    break
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                logger.error("agents process %d did not stop; killed", child.pid)
                child.kill()
                child.wait()


if __name__ == "__main__":
    main()
