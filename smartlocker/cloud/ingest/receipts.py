"""Per-cabinet committed sequence: what a receipt may promise.

A receipt ("committed up to seq N") lets the cabinet drop events 1..N from its
outbox, so N only advances over a contiguous run of committed events: seq 7
committed before seq 6 waits in ``ahead`` until 6 is committed too. Several
workers share one cabinet's stream, so the cursor lives in the database and is
updated in the batch's transaction (:mod:`.cursors`). This module is the pure part.

Seq restarts: a re-imaged cabinet starts again at seq 1 and its first event is
``boot``. A *new* boot (not a duplicate by ``(cabinet, seq, ts)``) at or below the
committed seq starts a new epoch: the cursor drops to ``boot.seq - 1`` and only
events with ``ts`` at or after the boot count from then on. A new non-boot event
at or below the committed seq means the cabinet restarted and its boot has not
arrived yet (workers may reorder): receipts for that cabinet are held back until
the boot arrives, because a receipt for the old, higher seq would make the
cabinet drop events the cloud does not have.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

__all__ = ["AHEAD_LIMIT", "Cursor", "EventKey", "advance", "advance_run"]

logger = logging.getLogger(__name__)

#: Committed seqs kept above a gap; past this, the highest are forgotten (the
#: cabinet resends them, since no receipt covers them).
AHEAD_LIMIT = 10_000


class EventKey(NamedTuple):
    """What the cursor needs to know about one event of a batch."""

    seq: int
    ts: datetime
    new: bool  # not a duplicate of a committed row
    boot: bool


@dataclass(slots=True)
class Cursor:
    cabinet: str
    committed_seq: int = 0
    ahead: set[int] = field(default_factory=set)
    epoch_ts: datetime | None = None
    held_since: datetime | None = None
    #: The row's version as last read or written (see :mod:`.cursors`).
    version: int = 0

    @property
    def receiptable(self) -> bool:
        return self.held_since is None and self.committed_seq > 0

    def copy(self) -> Cursor:
        return Cursor(
            self.cabinet,
            self.committed_seq,
            set(self.ahead),
            self.epoch_ts,
            self.held_since,
            self.version,
        )


def advance(cursor: Cursor, events: Iterable[EventKey], now: datetime) -> Cursor:
    """The cursor after a batch of this cabinet's events is committed (pure)."""
    out = cursor.copy()
    batch = list(events)
    restarts = [
        e
        for e in batch
        if e.boot
        and e.new
        and e.seq <= out.committed_seq
        and (out.epoch_ts is None or e.ts > out.epoch_ts)
    ]
    if restarts:
        boot = max(restarts, key=lambda e: e.ts)
        logger.warning(
            "cabinet %s restarted its seq at %d (was committed up to %d); new epoch from %s",
            out.cabinet,
            boot.seq,
            out.committed_seq,
            boot.ts.isoformat(),
        )
        out.committed_seq = boot.seq - 1
        out.ahead = set()
        out.epoch_ts = boot.ts
        out.held_since = None
    epoch = out.epoch_ts
    for e in batch:
        if epoch is not None and e.ts < epoch:
            continue
        if e.seq > out.committed_seq:
            out.ahead.add(e.seq)
        elif e.new and not e.boot and out.held_since is None:
            logger.warning(
                "cabinet %s sent a new event at seq %d <= committed %d: holding receipts"
                " until its boot arrives",
                out.cabinet,
                e.seq,
                out.committed_seq,
            )
            out.held_since = now
    q = out.committed_seq
    while q + 1 in out.ahead:
        q += 1
        out.ahead.discard(q)
    out.committed_seq = q
    if len(out.ahead) > AHEAD_LIMIT:
        keep = sorted(out.ahead)[:AHEAD_LIMIT]
        logger.warning("cabinet %s: %d seqs wait above a gap at %d", out.cabinet, len(out.ahead), q)
        out.ahead = set(keep)
    return out


def advance_run(cursor: Cursor, seqs: list[int], boot: bool) -> Cursor | None:
    """:func:`advance` for the usual batch, without building its :class:`EventKey` list.

    The usual batch of a cabinet has only seqs above the committed one and no
    boot, for a cursor with no seq epoch: then whether each event was new does
    not matter, and the cursor moves over the seqs (with those waiting above a
    gap) as far as they run. ``None`` means "not that case, call :func:`advance`"
    (``tests/ingest/test_cursor.py`` checks they agree).
    """
    if boot or cursor.epoch_ts is not None or not seqs:
        return None
    q = cursor.committed_seq
    lo = min(seqs)
    if lo <= q:
        return None
    n = len(seqs)
    if not cursor.ahead and lo == q + 1 and max(seqs) == q + n and len(set(seqs)) == n:
        return Cursor(cursor.cabinet, q + n, set(), None, cursor.held_since, cursor.version)
    ahead = set(cursor.ahead)
    ahead.update(seqs)
    while q + 1 in ahead:
        q += 1
        ahead.discard(q)
    if len(ahead) > AHEAD_LIMIT:
        return None  # advance() trims it, and says so
    return Cursor(cursor.cabinet, q, ahead, None, cursor.held_since, cursor.version)
