"""A cabinet clock that can be set wrong while the agent runs (the "slow clock" fault)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

__all__ = ["SkewedClock"]


class SkewedClock:
    """Wall-clock time off by :attr:`offset` (negative: behind); durations stay true.

    A Pi without a real-time clock boots with a stale time until NTP answers, and
    a broken NTP set-up lets it drift: only the wall clock is wrong, never the
    monotonic one, and that is what the agent's injected clock models.
    """

    def __init__(self, offset_s: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._offset = timedelta(seconds=offset_s)

    @property
    def offset(self) -> timedelta:
        with self._lock:
            return self._offset

    def set_offset(self, seconds: float) -> None:
        with self._lock:
            self._offset = timedelta(seconds=seconds)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:
        return time.monotonic()
