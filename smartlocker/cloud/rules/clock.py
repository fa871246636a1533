"""Cabinet clocks: a clock that is wrong becomes a ``fault`` alert, and cleared when right.

Why it matters: a cabinet checks a command's ``expires`` and ``ts`` against its own
clock (with a small tolerance), so a clock behind or ahead by more than that refuses
every remote unlock as ``expired``; it also stamps its events, telemetry and kiosk
code expiries with that clock. The cloud cannot fix the cabinet's clock (NTP on the
device does), but it can notice and tell the operator.

The skew is measured on ``telemetry`` (the heartbeat) and ``reported``: the
message's ``ts`` minus the time ingest received it. Delivery can only delay a
message, so a measurement is a lower bound of the clock's real offset:

* ahead by more than :attr:`ClockPolicy.limit` is certain at once;
* behind by more may also be a reading queued during an outage and replayed in a
  burst after it: the cabinet is only *suspect* until a message received at least
  :attr:`ClockPolicy.confirm` later is still behind (the next heartbeat is fresh);
* within the limit: the suspicion is dropped and an open clock fault cleared.

The cabinet-level ``fault`` alert (no compartment) is the clock's; its detail says
``clock skew ±N s``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from .alerts import AlertKind, clear_alert, raise_alert

__all__ = [
    "CORRECTION_S",
    "ClockCheck",
    "ClockPolicy",
    "check_clock",
    "clock_correction",
    "correction_of",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClockPolicy:
    #: A skew beyond this is a fault. The agent's own tolerance (``clock_skew_s``)
    #: defaults to 30 s; beyond it commands fail, so the operator hears of it before.
    limit: timedelta = timedelta(seconds=20)
    #: How far apart two "behind" measurements must be received to be believed.
    confirm: timedelta = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class ClockCheck:
    skew_s: float
    raised: int | None = None
    cleared: int | None = None


def check_clock(
    conn: psycopg.Connection[Any],
    cabinet: str,
    *,
    sent: datetime,
    now: datetime,
    policy: ClockPolicy | None = None,
) -> ClockCheck | None:
    """One measurement (``sent`` is the message's ``ts``, ``now`` its receipt time).

    Returns what changed, or None for an unknown cabinet.
    """
    policy = policy or ClockPolicy()
    skew = sent - now
    bad = abs(skew) > policy.limit
    row = conn.execute(
        "UPDATE cabinets SET clock_skew_s = %(skew)s, clock_checked_at = %(now)s,"
        " clock_suspect_since = CASE WHEN %(bad)s"
        " THEN coalesce(clock_suspect_since, %(now)s) END"
        " WHERE id = %(cabinet)s RETURNING clock_suspect_since",
        {"skew": skew.total_seconds(), "now": now, "bad": bad, "cabinet": cabinet},
    ).fetchone()
    if row is None:
        return None
    seconds = skew.total_seconds()
    if not bad:
        cleared = clear_alert(conn, cabinet, AlertKind.FAULT, now=now)
        if cleared is not None:
            logger.info("clock of %s is right again (skew %+.1f s)", cabinet, seconds)
        return ClockCheck(seconds, cleared=cleared)
    suspect_since: datetime = row[0]
    if skew < timedelta(0) and now - suspect_since < policy.confirm:
        logger.info(
            "clock of %s looks %.1f s behind; waiting for a later message", cabinet, -seconds
        )
        return ClockCheck(seconds)
    alert, new = raise_alert(
        conn,
        cabinet,
        AlertKind.FAULT,
        now=now,
        detail=(
            f"clock skew {seconds:+.0f} s"
            f" ({'ahead' if seconds > 0 else 'behind'}; limit {policy.limit.total_seconds():.0f} s)"
        ),
    )
    return ClockCheck(seconds, raised=alert if new else None)


def clock_correction(conn: psycopg.Connection[Any], cabinet: str) -> timedelta:
    """What to take off a cabinet's ``ts`` to get our time: its skew while its clock fault is open.

    Zero otherwise: small skews are noise, and a skew never confirmed is not known.
    Callers apply it as ``min(ts - correction, now)`` and may cache it per batch.
    """
    row = conn.execute(
        f"SELECT {CORRECTION_S} FROM cabinets c WHERE c.id = %s",  # noqa: S608 (a constant)
        (cabinet,),
    ).fetchone()
    return correction_of(None if row is None else row[0])


#: The SQL of :func:`clock_correction` in seconds (NULL: none), for a row ``c`` of
#: ``cabinets``, so that another statement on that row can return it too.
CORRECTION_S = (
    "CASE WHEN EXISTS (SELECT 1 FROM alerts a WHERE a.cabinet = c.id AND a.kind = 'fault'"
    " AND a.compartment IS NULL AND a.cleared_at IS NULL) THEN c.clock_skew_s END"
)


def correction_of(seconds: float | None) -> timedelta:
    """The correction from :data:`CORRECTION_S`'s value."""
    return timedelta(0) if seconds is None else timedelta(seconds=float(seconds))
