"""The real edge agent on gpiozero ``MockFactory`` pins, plus a small simulated world.

The world watches the lock pins: after a pulse it opens that compartment's door
(``open_after_s`` later) and closes it again (``hold_s`` later). With ``traffic_s``
it also opens a random closed door now and then without any pulse (someone forcing
it), which makes door and alarm events flow.

    python -m smartlocker.simulators.virtual_cabinet --config cabinet.toml [--traffic 0.02]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from smartlocker.edge_agent import Agent, AgentConfig, load_config, run_until_signal

__all__ = ["VirtualWorld", "main"]

logger = logging.getLogger(__name__)


@dataclass
class _Door:
    compartment: str
    lock_pin: Any
    door_pin: Any
    lock_active_high: bool
    door_open_high: bool
    open_at: float | None = None
    close_at: float | None = None
    was_energised: bool = False

    @property
    def is_open(self) -> bool:
        return bool(self.door_pin.state) == self.door_open_high

    def drive(self, is_open: bool) -> None:
        if is_open == self.door_open_high:
            self.door_pin.drive_high()
        else:
            self.door_pin.drive_low()


class VirtualWorld:
    """People and doors around a cabinet whose pins come from ``factory``."""

    def __init__(
        self,
        config: AgentConfig,
        factory: MockFactory,
        *,
        open_after_s: float = 0.05,
        hold_s: float = 0.2,
        traffic_s: float | None = None,
        open_on_unlock: bool = True,
        seed: int | None = None,
    ) -> None:
        self.open_after_s = open_after_s
        self.hold_s = hold_s
        self.traffic_s = traffic_s
        self.open_on_unlock = open_on_unlock
        self._random = random.Random(seed)
        self.doors = {
            c.id: _Door(
                c.id,
                factory.pin(c.lock_pin),
                factory.pin(c.door_pin),
                c.lock_active_high,
                c.door_open_high,
            )
            for c in config.compartments
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_traffic = time.monotonic()
        #: Injected faults: locks that do not release, doors nobody closes.
        self._faults = threading.Lock()
        self.jammed: set[str] = set()
        self.left_open: set[str] = set()

    # --- faults ---------------------------------------------------------------------

    def jam(self, compartment: str, jammed: bool = True) -> None:
        """The lock no longer releases: pulses do not let the door open."""
        with self._faults:
            (self.jammed.add if jammed else self.jammed.discard)(compartment)

    def leave_open(self, compartment: str) -> None:
        """The next person to open this door walks away without closing it."""
        with self._faults:
            self.left_open.add(compartment)

    def force_open(self, compartment: str) -> None:
        """Someone pulls the door open without any grant (and closes it later)."""
        with self._faults:
            self.doors[compartment].open_at = time.monotonic()

    def close(self, compartment: str) -> None:
        """Someone closes a door that was left open."""
        with self._faults:
            self.left_open.discard(compartment)
            self.doors[compartment].close_at = time.monotonic()

    def start(self) -> None:
        for door in self.doors.values():
            door.drive(False)
        self._thread = threading.Thread(target=self._run, name="virtual-world", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.step(time.monotonic())

    def step(self, now: float) -> None:
        with self._faults:
            self._step(now)

    def _step(self, now: float) -> None:
        for door in self.doors.values():
            energised = bool(door.lock_pin.state) == door.lock_active_high
            released = door.compartment not in self.jammed
            if (
                energised
                and not door.was_energised
                and self.open_on_unlock
                and released
                and not door.is_open
            ):
                door.open_at = now + self.open_after_s
            door.was_energised = energised
            if door.open_at is not None and now >= door.open_at:
                door.open_at = None
                door.drive(True)
                if door.compartment not in self.left_open:
                    door.close_at = now + self.hold_s
            elif door.close_at is not None and now >= door.close_at:
                door.close_at = None
                door.drive(False)
        if self.traffic_s is not None and now >= self._next_traffic:
            self._next_traffic = now + self.traffic_s
            idle = [d for d in self.doors.values() if not d.is_open and d.open_at is None]
            if idle:
                self._random.choice(idle).open_at = now


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--traffic", type=float, default=None, help="force a door every N s")
    parser.add_argument("--open-after", type=float, default=0.05)
    parser.add_argument("--hold", type=float, default=0.2)
    parser.add_argument("--no-kiosk", action="store_true")
    parser.add_argument(
        "--pin-report", type=Path, help="at exit, write every lock pin's history (JSON) here"
    )
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = load_config(args.config)
    factory = MockFactory()
    world = VirtualWorld(
        config, factory, open_after_s=args.open_after, hold_s=args.hold, traffic_s=args.traffic
    )
    agent = Agent(config, pin_factory=factory, kiosk=not args.no_kiosk)
    # The world starts (doors closed) once the agent has taken its pins.
    starter = threading.Thread(target=_start_world_when_ready, args=(agent, world), daemon=True)
    starter.start()
    try:
        run_until_signal(agent)
    finally:
        world.stop()
        if args.pin_report is not None:
            history = {
                str(c.lock_pin): [
                    (s.timestamp, bool(s.state)) for s in factory.pin(c.lock_pin).states
                ]
                for c in config.compartments
            }
            args.pin_report.write_text(json.dumps(history))


def _start_world_when_ready(agent: Agent, world: VirtualWorld) -> None:
    deadline = time.monotonic() + 30
    while agent.link is None and time.monotonic() < deadline:
        time.sleep(0.005)
    world.start()


if __name__ == "__main__":
    main()
