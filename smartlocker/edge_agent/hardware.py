"""Locks and door sensors around gpiozero devices; the pin factory is passed in.

Safety rules kept here, whatever the caller does:

* a lock is created de-energised (``initial_value=False``) and de-energised on
  :meth:`Lock.close`;
* a lock is energised only by :meth:`Lock.pulse`, for at most ``max_pulse_ms``; a
  pulse cannot be extended or restarted while one is running;
* a door sensor only reports what its pin says; nothing here assumes "closed".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gpiozero import DigitalInputDevice, DigitalOutputDevice
from gpiozero.exc import GPIOZeroError

from .config import CompartmentConfig
from .errors import HardwareError

__all__ = ["DoorSensor", "Lock", "default_pin_factory"]

logger = logging.getLogger(__name__)


def default_pin_factory() -> Any:
    """Real pins on a Pi (lgpio), unless ``GPIOZERO_PIN_FACTORY`` says otherwise."""
    from gpiozero import Device

    Device.ensure_pin_factory()
    return Device.pin_factory


class Lock:
    """A fail-secure solenoid lock, energised only in a bounded pulse.

    One thread of the lock's own (started with the first pulse) ends every pulse at
    its deadline: starting a timer thread per pulse cost a few hundred microseconds
    on the way to the bolt (more when the interpreter is busy). The cabinet's tick
    calls :meth:`watchdog` as well, should that thread ever be late.
    """

    def __init__(self, config: CompartmentConfig, *, pin_factory: Any) -> None:
        self.compartment = config.id
        self.max_pulse_ms = config.max_pulse_ms
        self._cond = threading.Condition(threading.Lock())
        self._ender: threading.Thread | None = None
        self._deadline: float | None = None
        self._closed = False
        #: The lengths (ms) of the most recent pulses, as timed (never above the limit).
        self.recent_pulses: deque[int] = deque(maxlen=1000)
        try:
            self._device = DigitalOutputDevice(
                config.lock_pin,
                active_high=config.lock_active_high,
                initial_value=False,
                pin_factory=pin_factory,
            )
        except GPIOZeroError as exc:
            raise HardwareError(f"lock of {config.id}: {exc}") from exc

    @property
    def energised(self) -> bool:
        """Whether the lock is driven now (a closed lock is released, never driven)."""
        with self._cond:
            return not self._closed and bool(self._device.value)

    def pulse(self, ms: int) -> int:
        """Energise for ``min(ms, max_pulse_ms)``; returns the length used.

        Raises :class:`HardwareError` if a pulse is already running or the pin fails.
        """
        length = max(1, min(int(ms), self.max_pulse_ms))
        with self._cond:
            if self._closed:
                raise HardwareError(f"lock of {self.compartment} is closed")
            if self._deadline is not None:
                raise HardwareError(f"lock of {self.compartment} is already pulsing")
            if self._ender is None:
                self._ender = threading.Thread(
                    target=self._end_pulses, name=f"lock-{self.compartment}", daemon=True
                )
                self._ender.start()
            self._deadline = time.monotonic() + length / 1000.0
            try:
                self._device.on()
            except GPIOZeroError as exc:
                self._off_locked()
                raise HardwareError(f"lock of {self.compartment}: {exc}") from exc
            self._cond.notify()
            self.recent_pulses.append(length)
        if logger.isEnabledFor(logging.INFO):
            logger.info("lock %s pulsed for %d ms", self.compartment, length)
        return length

    def watchdog(self) -> None:
        """De-energise if a pulse outlived its deadline (a stalled pulse-ending thread)."""
        with self._cond:
            if self._deadline is not None and time.monotonic() > self._deadline:
                self._off_locked()

    def _end_pulses(self) -> None:
        """The lock's own thread: de-energise at each pulse's deadline, until closed."""
        with self._cond:
            while not self._closed:
                deadline = self._deadline
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is None or remaining > 0:
                    self._cond.wait(remaining)
                    continue
                try:
                    self._off_locked()
                except Exception:  # the pin failed: the next pulse still gets its end
                    logger.exception("lock %s: de-energising failed", self.compartment)

    def _off_locked(self) -> None:
        try:
            self._device.off()
        finally:
            self._deadline = None

    def close(self) -> None:
        """De-energise and release the pin (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify()
            try:
                self._off_locked()
            finally:
                self._device.close()
        if self._ender is not None and self._ender is not threading.current_thread():
            self._ender.join(1.0)


class DoorSensor:
    """A door contact; calls ``on_change(is_open)`` from gpiozero's thread."""

    def __init__(
        self,
        config: CompartmentConfig,
        *,
        pin_factory: Any,
        on_change: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.compartment = config.id
        pull = {"up": True, "down": False, "none": None}[config.door_pull]
        kwargs: dict[str, Any] = {"pull_up": pull, "pin_factory": pin_factory}
        if pull is None:
            kwargs["active_state"] = config.door_open_high
        try:
            self._device = DigitalInputDevice(config.door_pin, **kwargs)
        except GPIOZeroError as exc:
            raise HardwareError(f"door sensor of {config.id}: {exc}") from exc
        # With a pull resistor gpiozero decides the active level; keep "open" meaning open.
        self._invert = pull is not None and (pull is True) == config.door_open_high
        if on_change is not None:
            callback = on_change
            self._device.when_activated = lambda: callback(self.compartment, self.is_open)
            self._device.when_deactivated = lambda: callback(self.compartment, self.is_open)

    @property
    def is_open(self) -> bool:
        return bool(self._device.is_active) != self._invert

    def close(self) -> None:
        self._device.when_activated = None
        self._device.when_deactivated = None
        self._device.close()
