"""Rate limits and code-attempt lockouts, shared by every API worker through PostgreSQL.

* A fixed-window counter per bucket (one atomic ``INSERT … ON CONFLICT DO UPDATE
  … RETURNING``): :func:`count_statement` is that upsert, refusing past a limit with
  :data:`RATE_LIMITED`; a remote unlock counts its key with it inside its own single
  statement (``unlock._OPEN``), which first refuses without an error when the window
  is already full (:data:`GATE_STATEMENT`), and :class:`PendingHit` reads the count,
  words the refusal and cleans up old windows.
* :class:`CodeThrottle` counts wrong pickup codes per subject (the parcel, and the
  API key that typed them) and imposes a growing lockout once the free attempts are
  used, as the cabinet's kiosk does; a right code clears the subject.

The unlock's count commits with its command (a refused unlock counts nothing); the
code-attempt counts run in their own short transaction, so they survive the request's
failure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from .errors import RateLimited

__all__ = [
    "GATE_STATEMENT",
    "RATE_LIMITED",
    "CodeThrottle",
    "PendingHit",
    "count_params",
    "count_statement",
    "lockout_for",
    "window_start",
]

logger = logging.getLogger(__name__)

_EPOCH = datetime(2000, 1, 1).astimezone()

#: SQLSTATE of a count refused in the database (``smartlocker_refuse``, migration 0011):
#: the transaction it belongs to is aborted, so the refused request counts nothing.
RATE_LIMITED = "SL429"


@dataclass(slots=True)
class PendingHit:
    """One request counted by a statement the caller runs (:func:`count_statement`).

    The caller hands the count it read to :meth:`read`; :meth:`exceeded` words the
    refusal; :meth:`forget_old_windows` cleans up (after the caller's commit, when it
    holds no other row locks).
    """

    conn: psycopg.Connection[Any]
    bucket: str
    start: datetime
    window: timedelta
    now: datetime
    _hits: int | None = None

    def hits(self) -> int:
        """The count :meth:`read` was given."""
        if self._hits is None:
            raise RuntimeError(f"the count of {self.bucket!r} was not read")
        return self._hits

    def read(self, hits: int) -> None:
        """The count, read by the caller from its statement's row."""
        self._hits = hits

    def forget_old_windows(self) -> None:
        """The first hit of a window deletes the bucket's older windows.

        Rows a request of the old window still holds are skipped (deleted by a later
        window's first hit): waiting for them here, while holding other locks of the
        caller's transaction, could close a cycle of waits (a deadlock) with that
        request and ingest.
        """
        if self.hits() == 1:
            self.conn.execute(
                "DELETE FROM api_rate_limits WHERE ctid = ANY(ARRAY("
                "SELECT ctid FROM api_rate_limits WHERE bucket = %s AND window_start < %s"
                " FOR UPDATE SKIP LOCKED))",
                (self.bucket, self.start),
            )

    def exceeded(self, limit: int) -> RateLimited:
        """The error for a request past ``limit`` in this window."""
        seconds = self.window.total_seconds()
        retry = (self.start + self.window - self.now).total_seconds()
        return RateLimited(
            f"more than {limit} requests per {int(seconds)} s", retry_after=int(retry) + 1
        )


def window_start(now: datetime, window: timedelta) -> datetime:
    """The start of the fixed window ``now`` falls in."""
    return now - timedelta(seconds=(now - _EPOCH).total_seconds() % window.total_seconds())


def count_statement(source: str) -> str:
    """The count's upsert, ``RETURNING hits`` (refusing past ``refuse_past``), with the
    row to insert from ``source`` (``VALUES`` or a ``SELECT``: a statement that counts
    after doing something else, as the API's unlock does; named parameters
    :func:`count_params`)."""
    return (
        f"INSERT INTO api_rate_limits (bucket, window_start, hits) {source}"
        " ON CONFLICT (bucket, window_start)"
        " DO UPDATE SET hits = api_rate_limits.hits + 1 RETURNING hits,"
        " smartlocker_refuse(hits > %(refuse_past)s, %(rate_limited)s, 'rate limit reached')"
    )


#: One row, ``over``: whether the bucket's window already holds ``refuse_past`` hits
#: (committed ones; no lock). A statement that counts can refuse on it before writing
#: anything, without an error: the count's own refusal (:func:`count_statement`) is
#: then left for a request that raced another one past the limit. Named parameters
#: :func:`count_params`.
GATE_STATEMENT = (
    "SELECT coalesce((SELECT hits >= %(refuse_past)s FROM api_rate_limits"
    " WHERE bucket = %(bucket)s AND window_start = %(window_start)s), false) AS over"
)


def count_params(pending: PendingHit, refuse_past: int | None) -> dict[str, Any]:
    """The parameters of :func:`count_statement` for ``pending``'s bucket and window."""
    return {
        "bucket": pending.bucket,
        "window_start": pending.start,
        "refuse_past": refuse_past,
        "rate_limited": RATE_LIMITED,
    }


def lockout_for(failures: int, free_attempts: int) -> timedelta | None:
    """How long to refuse codes after ``failures`` wrong ones in a row.

    The kiosk's policy (``smartlocker/edge_agent/throttle.py``, kept equal here
    because the cloud does not import the agent's hardware-bound package): from
    the ``free_attempts``-th wrong code on, 30 s doubling with each one, at most 1 h.
    """
    if failures < free_attempts:
        return None
    exponent = min(failures - free_attempts, 30)
    return timedelta(seconds=min(30.0 * 2**exponent, 3600.0))


@dataclass(frozen=True, slots=True)
class CodeThrottle:
    """Wrong-code lockouts per subject (``parcel:<id>``, ``key:<id>``), as the kiosk's.

    A run of wrong codes is forgotten after ``reset_after`` without one; a right
    code ends the run but not a lockout already running.
    """

    free_attempts: int = 5
    reset_after: timedelta = timedelta(minutes=15)

    def check(self, conn: psycopg.Connection[Any], subjects: list[str], now: datetime) -> None:
        """Raise :class:`RateLimited` if any subject is locked out right now."""
        row = conn.execute(
            "SELECT max(locked_until) FROM api_code_lockouts"
            " WHERE subject = ANY(%s) AND locked_until > %s",
            (subjects, now),
        ).fetchone()
        if row is not None and row[0] is not None:
            raise RateLimited(
                "too many wrong codes; wait before trying again",
                retry_after=int((row[0] - now).total_seconds()) + 1,
                slug="code-throttled",
            )

    def failed(self, conn: psycopg.Connection[Any], subjects: list[str], now: datetime) -> None:
        """Record one wrong code for every subject (committed on its own)."""
        with conn.transaction():
            for subject in subjects:
                row = conn.execute(
                    "INSERT INTO api_code_lockouts (subject, failures, updated_at)"
                    " VALUES (%s, 1, %s) ON CONFLICT (subject) DO UPDATE SET failures ="
                    " CASE WHEN api_code_lockouts.updated_at > EXCLUDED.updated_at - %s"
                    " THEN api_code_lockouts.failures + 1 ELSE 1 END,"
                    " updated_at = EXCLUDED.updated_at"
                    " RETURNING failures",
                    (subject, now, self.reset_after),
                ).fetchone()
                assert row is not None
                lock = lockout_for(row[0], self.free_attempts)
                if lock is not None:
                    conn.execute(
                        "UPDATE api_code_lockouts SET locked_until ="
                        " greatest(locked_until, %s) WHERE subject = %s",
                        (now + lock, subject),
                    )
                    logger.warning(
                        "code attempts: %s locked out for %s after %d wrong codes",
                        subject,
                        lock,
                        row[0],
                    )

    def succeeded(self, conn: psycopg.Connection[Any], subjects: list[str]) -> None:
        """A right code ends the run of wrong ones (a running lockout stays)."""
        with conn.transaction():
            conn.execute(
                "UPDATE api_code_lockouts SET failures = 0 WHERE subject = ANY(%s)", (subjects,)
            )
