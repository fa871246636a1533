"""Wrong-code throttling per kiosk: a few free tries, then a growing lockout.

Pure functions over :class:`~smartlocker.edge_agent.store.ThrottleRecord` and a
wall-clock time in seconds; the agent persists the records so that a power cycle
does not reset a lockout.
"""

from __future__ import annotations

from .config import ThrottleConfig
from .store import ThrottleRecord

__all__ = ["locked_until", "record_failure", "record_success"]


def locked_until(record: ThrottleRecord, now: float) -> float | None:
    """The end of the current lockout, or None if codes may be tried now."""
    return record.locked_until if now < record.locked_until else None


def record_failure(record: ThrottleRecord, now: float, config: ThrottleConfig) -> ThrottleRecord:
    """One more wrong code; from ``free_attempts`` on, each one locks for longer."""
    recent = now - record.last_failure < config.reset_after_s
    failures = (record.failures if recent else 0) + 1
    until = record.locked_until
    if failures >= config.free_attempts:
        exponent = min(failures - config.free_attempts, 30)
        lockout = min(config.lockout_s * (2**exponent), config.max_lockout_s)
        until = max(until, now + lockout)
    return ThrottleRecord(failures=failures, last_failure=now, locked_until=until)


def record_success(record: ThrottleRecord) -> ThrottleRecord:
    """A valid code ends the run of wrong ones (an ongoing lockout stays)."""
    return ThrottleRecord(failures=0, last_failure=0.0, locked_until=record.locked_until)
