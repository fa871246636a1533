"""The receipt cursors in ``ingest_cursors``, remembered between batches.

Workers share a cabinet's stream, so a cursor is read and written in the
transaction of the events it covers. Locking and reading the cursor of every
cabinet a batch touches (``SELECT … FOR NO KEY UPDATE``) before writing it back
cost two statements over hundreds of rows per batch. Instead, a worker remembers
the cursors as it committed them, each with its row ``version`` (a number drawn
per transaction), starts a batch from those, and writes them back with a version
check (``WHERE version = the one remembered``), an update that also locks the
row. A cursor another worker changed meanwhile fails the check; the writer then
locks and reads it and computes it again from the committed row, in the same
transaction. Only cursors not remembered (first sight, or after a failed batch)
are locked and read before the events go in. Receipts come only from cursors
whose check passed, so none is ever computed from a stale cursor.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import psycopg

from .receipts import Cursor

__all__ = ["CursorStore", "lock_cursors", "new_version"]

logger = logging.getLogger(__name__)

_SEQ_ONLY = (
    "UPDATE ingest_cursors AS c SET committed_seq = u.q, version = %s, updated_at = %s"
    " FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS u(cabinet, q, v)"
    " WHERE c.cabinet = u.cabinet AND c.version = u.v"
)
_ALL_COLUMNS = (
    "UPDATE ingest_cursors AS c SET committed_seq = u.q, ahead = u.a::bigint[],"
    " epoch_ts = u.e, held_since = u.h, version = %s, updated_at = %s"
    " FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::timestamptz[],"
    " %s::timestamptz[], %s::bigint[]) AS u(cabinet, q, a, e, h, v)"
    " WHERE c.cabinet = u.cabinet AND c.version = u.v"
)


def new_version() -> int:
    """A row version for one transaction's cursor writes (unique with certainty enough)."""
    return secrets.randbits(62) + 1


def _text_array(names: list[str]) -> str:
    """A ``text[]`` literal of cabinet ids (they hold no quote or backslash), cheaper
    to send than a list psycopg adapts element by element."""
    return '{"' + '","'.join(names) + '"}' if names else "{}"


def _int_array(values: Iterable[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


def lock_cursors(conn: psycopg.Connection[Any], cabinets: Iterable[str]) -> dict[str, Cursor]:
    """Create missing cursors and lock and read them, in cabinet order (no deadlocks)."""
    names = sorted(set(cabinets))
    if not names:
        return {}
    literal = _text_array(names)
    conn.execute(
        "INSERT INTO ingest_cursors (cabinet) SELECT c FROM unnest(%s::text[]) AS c"
        " ORDER BY c ON CONFLICT DO NOTHING",
        (literal,),
    )
    rows = conn.execute(
        "SELECT cabinet, committed_seq, ahead, epoch_ts, held_since, version"
        " FROM ingest_cursors WHERE cabinet = ANY(%s::text[]) ORDER BY cabinet FOR NO KEY UPDATE",
        (literal,),
    ).fetchall()
    return {r[0]: Cursor(r[0], r[1], set(r[2]), r[3], r[4], r[5]) for r in rows}


class CursorStore:
    """One writer's remembered cursors (writer thread only)."""

    def __init__(self, limit: int = 200_000) -> None:
        self._known: dict[str, Cursor] = {}
        self._limit = limit

    def load(self, conn: psycopg.Connection[Any], cabinets: Iterable[str]) -> dict[str, Cursor]:
        """The cursors to start a batch from: remembered, or else locked and read."""
        known = self._known
        out: dict[str, Cursor] = {}
        missing: list[str] = []
        for name in cabinets:
            c = known.get(name)
            if c is None:
                missing.append(name)
            else:
                out[name] = c
        if missing:
            out.update(lock_cursors(conn, missing))
        return out

    def store(
        self,
        conn: psycopg.Connection[Any],
        before: Mapping[str, Cursor],
        after: Mapping[str, Cursor],
        now: datetime,
        version: int,
    ) -> list[str]:
        """Write ``after`` where the rows still have ``before``'s versions.

        Every cursor of ``after`` is written (even one that did not move: its
        receipt must come from a checked row). Returns the cabinets whose check
        failed, sorted: another worker changed them since they were read.
        """
        seq_only: list[Cursor] = []
        changed: list[Cursor] = []
        for name, c in after.items():
            b = before[name]
            if b.ahead == c.ahead and b.epoch_ts == c.epoch_ts and b.held_since == c.held_since:
                seq_only.append(c)
            else:
                changed.append(c)
        written = 0
        if seq_only:
            written += conn.execute(
                _SEQ_ONLY,
                (
                    version,
                    now,
                    _text_array([c.cabinet for c in seq_only]),
                    _int_array(c.committed_seq for c in seq_only),
                    _int_array(before[c.cabinet].version for c in seq_only),
                ),
            ).rowcount
        if changed:
            written += conn.execute(
                _ALL_COLUMNS,
                (
                    version,
                    now,
                    [c.cabinet for c in changed],
                    [c.committed_seq for c in changed],
                    ["{" + ",".join(map(str, sorted(c.ahead))) + "}" for c in changed],
                    [c.epoch_ts for c in changed],
                    [c.held_since for c in changed],
                    [before[c.cabinet].version for c in changed],
                ),
            ).rowcount
        if written == len(after):
            return []
        names = list(after)
        confirmed = {
            r[0]
            for r in conn.execute(
                "SELECT cabinet FROM ingest_cursors WHERE cabinet = ANY(%s::text[])"
                " AND version = %s",
                (_text_array(names), version),
            )
        }
        stale = sorted(n for n in names if n not in confirmed)
        logger.info("%d cursor(s) changed by another worker since read: %s", len(stale), stale[:5])
        return stale

    def committed(self, after: Mapping[str, Cursor], version: int) -> None:
        """Remember the cursors of a committed batch, with the version written."""
        if len(self._known) + len(after) > self._limit:
            self._known.clear()
        for name, c in after.items():
            c.version = version
            self._known[name] = c

    def forget(self) -> None:
        """After a failed batch: read everything again."""
        self._known.clear()
