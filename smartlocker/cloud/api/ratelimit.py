"""Rate limits and code-attempt lockouts, shared by every API worker through PostgreSQL.

* A fixed-window counter per bucket (one atomic ``INSERT … ON CONFLICT DO UPDATE
  … RETURNING``): :func:`count_statement` is that upsert, refusing past a limit with
  :data:`RATE_LIMITED`; a remote unlock counts its key with it inside its own single
  statement (``unlock._OPEN``). :func:`hit` counts on its own and raises
  :class:`RateLimited` past the limit; :func:`count_hit` sends the count without
  waiting for it.
* :class:`CodeThrottle` counts wrong pickup codes per subject (the parcel, and the
  API key that typed them) and imposes a growing lockout once the free attempts are
  used, as the cabinet's kiosk does; a right code clears the subject.

Both run in their own short transaction, so a counter survives the request's failure.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from .errors import RateLimited

__all__ = [
    "RATE_LIMITED",
    "CodeThrottle",
    "PendingHit",
    "count_hit",
    "count_params",
    "count_statement",
    "hit",
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
    """One counted request whose count is read later (:func:`count_hit`).

    Lets the count travel in a pipeline with other statements of the same
    transaction: :meth:`check` reads it and decides; :meth:`forget_old_windows`
    cleans up (after the caller's commit, when it holds other row locks).
    """

    conn: psycopg.Connection[Any]
    #: Where the count will be read (None: ``_hits`` is already known).
    cursor: psycopg.Cursor[Any] | None
    bucket: str
    start: datetime
    window: timedelta
    now: datetime
    _hits: int | None = None

    def hits(self) -> int:
        if self._hits is None:
            assert self.cursor is not None
            row = self.cursor.fetchone()
            assert row is not None
            self._hits = int(row[0])
        return self._hits

    def read(self, hits: int) -> None:
        """The count, read by the caller (where the hit was part of its statement)."""
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

    def check(self, limit: int) -> int:
        """The count; raise :class:`RateLimited` past ``limit``."""
        hits = self.hits()
        if hits > limit:
            raise self.exceeded(limit)
        return hits

    def exceeded(self, limit: int) -> RateLimited:
        """The error for a request past ``limit`` in this window."""
        seconds = self.window.total_seconds()
        retry = (self.start + self.window - self.now).total_seconds()
        return RateLimited(
            f"more than {limit} requests per {int(seconds)} s", retry_after=int(retry) + 1
        )


def count_hit(
    conn: psycopg.Connection[Any],
    bucket: str,
    *,
    window: timedelta,
    now: datetime,
) -> PendingHit:
    """Count one request in ``bucket`` (one atomic upsert); :meth:`PendingHit.check` reads it."""
    pending = PendingHit(conn, None, bucket, window_start(now, window), window, now)
    pending.cursor = conn.execute(
        count_statement("VALUES (%(bucket)s, %(window_start)s, 1)"),
        count_params(pending, None),
    )
    return pending


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


def count_params(pending: PendingHit, refuse_past: int | None) -> dict[str, Any]:
    """The parameters of :func:`count_statement` for ``pending``'s bucket and window."""
    return {
        "bucket": pending.bucket,
        "window_start": pending.start,
        "refuse_past": refuse_past,
        "rate_limited": RATE_LIMITED,
    }


def hit(
    conn: psycopg.Connection[Any],
    bucket: str,
    *,
    limit: int,
    window: timedelta,
    now: datetime,
    own_transaction: bool = True,
) -> int:
    """Count one request in ``bucket``; raise :class:`RateLimited` past ``limit``.

    With ``own_transaction`` False the count joins the caller's transaction (one
    commit less); a request that fails then does not count.
    """
    with conn.transaction() if own_transaction else nullcontext():
        pending = count_hit(conn, bucket, window=window, now=now)
        pending.forget_old_windows()
    return pending.check(limit)


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
