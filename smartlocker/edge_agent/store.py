"""The agent's one SQLite database (WAL, ``synchronous=FULL``).

It holds the event outbox with its persistent ``seq``, a bounded telemetry queue,
the command high-water mark and the stored result (and counter) of every command, the
applied desired state, used codes and the kiosk throttle. Every write is one transaction,
committed before anything that depends on it happens (publish, pulse, answer), so a
power cut or SIGKILL at any point leaves a consistent database.

Writes that belong together share one transaction (:meth:`Store.atomic`): a command
and its ``unlocked`` event, a door's event and the ack it resolves. Bookkeeping whose
loss costs only a repetition is committed without waiting for the disk, never inside
the commits an unlock waits for: a receipt's deletions at once (so that an agent that
keeps crashing still shrinks its outbox), and with them the acks marked sent since
the last receipt, which wait in memory for it (or, when none comes, for
:data:`BOOKKEEPING_MAX_AGE_S`, :meth:`Store.flush_bookkeeping`, and for the store's
close). Lost (SIGKILL, power cut), such marks only make the agent send those acks
again, which the cloud ignores.

Neither ``seq`` nor the command high-water mark is written with every event or
command: that would add a page to each commit an unlock waits for (longer flushes,
more wear on a Pi's flash). The next ``seq`` is one past the outbox's highest row, and
the mark is the highest counter in ``commands``, whose rows inside the replay window
are never trimmed. ``meta`` keeps a floor for each: ``next_seq`` is written in the
transaction that deletes receipted events (which may empty the outbox), and
``command_hwm`` stays as databases written before 2026-11-22 left it.

What the link asks on every publishing round (the acks still to send, the lowest
unreceipted ``seq``, the newest events' payloads) and what every command is checked
against (the replay window: the high-water mark and the counters seen) is answered
from memory: a mirror of the committed rows, changed only when a transaction that
changed them commits (a rolled-back one leaves it as it was). The database stays
the truth; the mirror is rebuilt from it when the store opens.

Not thread-safe by itself: the agent calls it under its one state lock.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from smartlocker.protocol import REPLAY_WINDOW, ReplayWindow

from .errors import StoreError

__all__ = [
    "BOOKKEEPING_MAX_AGE_S",
    "CommandRecord",
    "Store",
    "ThrottleRecord",
    "last_seq_given",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    counter INTEGER,
    compartment TEXT,
    outcome TEXT,
    ack BLOB,
    ack_sent INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
-- The acks still to send (``unsent_acks`` runs on every publish round).
CREATE INDEX IF NOT EXISTS commands_unsent ON commands (created)
    WHERE ack IS NOT NULL AND ack_sent = 0;
CREATE TABLE IF NOT EXISTS desired (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS used_codes (
    hash TEXT PRIMARY KEY,
    used_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS throttle (
    kiosk TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_failure REAL NOT NULL,
    locked_until REAL NOT NULL
);
"""

#: Stored command results kept for duplicate deliveries, besides those whose counter is
#: still inside the replay window: they are the window's memory and are never trimmed
#: (the high-water mark alone refuses anything older).
_KEEP_COMMANDS = 5000
#: Old command results are trimmed once per this many new commands (not on each).
_TRIM_EVERY = 100
#: Acks marked sent wait at most this long (s) for a receipt's commit to go with.
BOOKKEEPING_MAX_AGE_S = 1.0
#: Payloads of the newest events kept in memory for publishing (older ones are read
#: from the database: after a restart, or while far behind).
_RECENT_EVENTS = 1024


def last_seq_given(db: sqlite3.Connection) -> int:
    """The highest ``seq`` an agent's database ever gave out (0: none), read through
    any connection to it: one below the floor in ``meta`` or the outbox's highest row,
    whichever is higher (see the module's docstring)."""
    floor, highest = db.execute(
        "SELECT (SELECT value FROM meta WHERE key = 'next_seq'), (SELECT max(seq) FROM outbox)"
    ).fetchone()
    return max(int(floor or 1) - 1, int(highest or 0))


@dataclass(frozen=True, slots=True)
class CommandRecord:
    id: str
    counter: int | None
    compartment: str | None
    #: None while the door is still being watched.
    outcome: str | None
    ack: bytes | None
    ack_sent: bool


@dataclass(frozen=True, slots=True)
class ThrottleRecord:
    failures: int
    last_failure: float
    locked_until: float


class Store:
    """The agent's database; open with :meth:`open`, release with :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.parent}: {exc.strerror or exc}") from None
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: WAL mode refused ({mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            # Neither is written with every event or command (see the module's docstring).
            self._next_seq = last_seq_given(self._db) + 1
            max_counter = self._db.execute("SELECT max(counter) FROM commands").fetchone()[0]
            hwm = max(self._meta("command_hwm", 0), int(max_counter or 0))
            # Read once (a scan of at most ~_KEEP_COMMANDS + window rows), then mirrored.
            seen = self._db.execute(
                "SELECT counter FROM commands WHERE counter > ?", (hwm - REPLAY_WINDOW,)
            ).fetchall()
            first = self._db.execute("SELECT min(seq) FROM outbox").fetchone()[0]
            unsent = self._db.execute(
                "SELECT id, ack FROM commands WHERE ack IS NOT NULL AND ack_sent = 0 "
                "ORDER BY created"
            ).fetchall()
        except BaseException:
            self._db.close()
            raise
        self._depth = 0
        self._since_trim = 0
        # The mirror of committed state (see the module's docstring).
        #: The lowest unreceipted ``seq`` (None: the outbox is empty).
        self._first: int | None = None if first is None else int(first)
        #: Acks not yet taken by the broker, by command id, in the order they became so.
        self._unsent: dict[str, bytes] = {str(i): bytes(a) for i, a in unsent}
        #: The command high-water mark and the counters seen within the window below it.
        self._window = ReplayWindow(hwm, (int(c) for (c,) in seen))
        #: Payloads of the newest events: consecutive seqs up to ``_next_seq - 1``.
        self._recent: dict[int, bytes] = {}
        #: Telemetry rows may be waiting (unknown after opening).
        self._telemetry_waiting = True
        # Bookkeeping not written yet (see flush_bookkeeping).
        self._acks_sent: set[str] = set()
        self._receipted_upto = 0
        self._deleted_upto = 0
        self._bookkeeping_since: float | None = None
        # The open transaction's view and what its commit changes in the mirror.
        self._tx_next_seq = self._next_seq
        self._tx_hwm = hwm
        self._on_commit: list[Callable[[], None]] = []

    def close(self) -> None:
        """Write what bookkeeping is left, then close the database."""
        try:
            self.flush_bookkeeping()
        except sqlite3.Error as exc:  # only a repetition is lost; closing must go on
            logger.warning("bookkeeping not written at close: %s", exc)
        finally:
            self._db.close()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Every write inside commits together, once, at the end (durably)."""
        with self._tx():
            yield

    @contextmanager
    def _tx(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        if self._depth:  # inside atomic(): the outermost block commits
            self._depth += 1
            try:
                yield self._db
            finally:
                self._depth -= 1
            return
        if not durable:
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._depth = 1
        self._tx_next_seq = self._next_seq
        self._tx_hwm = self._window.high_water
        self._on_commit.clear()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            for change in self._on_commit:
                change()
        finally:
            self._depth = 0
            self._on_commit.clear()
            if not durable:
                self._db.execute("PRAGMA synchronous=FULL")

    # -- bookkeeping (with each receipt, else at most once per BOOKKEEPING_MAX_AGE_S) --

    def _write_bookkeeping(self) -> tuple[frozenset[str], int]:
        """Inside a transaction: write the pending marks and receipt deletions."""
        marks = frozenset(self._acks_sent)
        if marks:
            self._db.executemany(
                "UPDATE commands SET ack_sent = 1 WHERE id = ?", [(i,) for i in marks]
            )
        upto = self._receipted_upto
        if upto > self._deleted_upto:
            # The floor of ``seq`` first, in the same transaction: the rows deleted
            # may be all there were (see the module's docstring).
            self._set_meta("next_seq", self._next_seq)
            self._db.execute("DELETE FROM outbox WHERE seq <= ?", (upto,))
        return marks, upto

    def _bookkeeping_written(self, marks: frozenset[str], upto: int) -> None:
        self._acks_sent -= marks
        self._deleted_upto = max(self._deleted_upto, upto)
        if not self._acks_sent and self._receipted_upto <= self._deleted_upto:
            self._bookkeeping_since = None

    def _bookkeeping_added(self) -> None:
        if self._bookkeeping_since is None:
            self._bookkeeping_since = time.monotonic()

    def flush_bookkeeping(self, older_than: float = 0.0) -> bool:
        """Commit pending bookkeeping on its own (not flushed to disk) if it waited
        ``older_than`` seconds or more; returns whether it did."""
        since = self._bookkeeping_since
        if since is None or self._depth or time.monotonic() - since < older_than:
            return False
        with self._tx(durable=False):
            written = self._write_bookkeeping()
        self._bookkeeping_written(*written)
        return True

    def _meta(self, key: str, default: int = 0) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else int(row[0])

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- outbox ---------------------------------------------------------------

    def append_event(self, build: Callable[[int], tuple[T, bytes]]) -> T:
        """Give the next ``seq`` to ``build`` and store what it returns, atomically."""
        with self._tx() as db:
            seq = self._tx_next_seq
            result, payload = build(seq)
            db.execute("INSERT INTO outbox (seq, payload) VALUES (?, ?)", (seq, payload))
            self._tx_next_seq = seq + 1
            self._on_commit.append(lambda: self._event_committed(seq, payload))
        return result

    def _event_committed(self, seq: int, payload: bytes) -> None:
        self._next_seq = seq + 1
        if self._first is None:
            self._first = seq
        recent = self._recent
        if recent and seq - 1 not in recent:  # never a gap in the kept run
            recent.clear()
        recent[seq] = payload
        if len(recent) > _RECENT_EVENTS:
            del recent[next(iter(recent))]

    @property
    def last_seq(self) -> int:
        """The highest ``seq`` ever given out (0 before the first event)."""
        return self._next_seq - 1

    def pending_events(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Unreceipted events with ``seq > after``, in order."""
        start = max(after, self._receipted_upto) + 1
        end = min(self._next_seq, start + max(0, limit))
        if start >= end:
            return []
        recent = self._recent
        if start in recent:  # the run in memory reaches ``_next_seq - 1``
            return [(seq, recent[seq]) for seq in range(start, end)]
        rows = self._db.execute(
            "SELECT seq, payload FROM outbox WHERE seq >= ? ORDER BY seq LIMIT ?",
            (start, end - start),
        ).fetchall()
        return [(int(seq), bytes(payload)) for seq, payload in rows]

    def first_unreceipted(self) -> int | None:
        return self._first

    def outbox_depth(self) -> int:
        return int(
            self._db.execute(
                "SELECT count(*) FROM outbox WHERE seq > ?", (self._receipted_upto,)
            ).fetchone()[0]
        )

    def receipt(self, upto_seq: int) -> int:
        """Drop events up to ``upto_seq``; returns how many were dropped.

        Committed at once with the acks marked sent meanwhile, not flushed to disk:
        lost to a power cut, the events are sent again and the cloud de-duplicates
        them. Never beyond the last ``seq`` given out.
        """
        first = self._first
        if first is None or upto_seq < first:
            return 0
        upto = min(upto_seq, self._next_seq - 1)
        self._receipted_upto = max(self._receipted_upto, upto)
        self._first = upto + 1 if upto + 1 < self._next_seq else None
        recent = self._recent
        while recent:
            oldest = next(iter(recent))
            if oldest > upto:
                break
            del recent[oldest]
        self._bookkeeping_added()
        self.flush_bookkeeping()  # inside a transaction: that one's tick writes it
        return upto - first + 1

    # -- telemetry (bounded, may be dropped) -----------------------------------

    def add_telemetry(self, payload: bytes, keep: int) -> None:
        with self._tx() as db:
            cur = db.execute("INSERT INTO telemetry (payload) VALUES (?)", (payload,))
            newest = int(cur.lastrowid or 0)
            dropped = db.execute("DELETE FROM telemetry WHERE id <= ?", (newest - keep,))
            if dropped.rowcount:
                logger.info("telemetry queue full: dropped %d oldest readings", dropped.rowcount)
            self._on_commit.append(self._telemetry_added)

    def _telemetry_added(self) -> None:
        self._telemetry_waiting = True

    def pending_telemetry(self, limit: int = 100) -> list[tuple[int, bytes]]:
        if not self._telemetry_waiting:  # asked on every publishing round
            return []
        rows = self._db.execute(
            "SELECT id, payload FROM telemetry ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        if not rows:
            self._telemetry_waiting = False
        return [(int(i), bytes(p)) for i, p in rows]

    def drop_telemetry(self, row_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM telemetry WHERE id = ?", (row_id,))

    # -- commands ----------------------------------------------------------------

    @property
    def command_high_water(self) -> int:
        return self._window.high_water

    @property
    def replay_window(self) -> ReplayWindow:
        """What a command's counter is checked against (committed state; read only:
        :meth:`record_command` changes it when its transaction commits)."""
        return self._window

    def command(self, command_id: str) -> CommandRecord | None:
        row = self._db.execute(
            "SELECT id, counter, compartment, outcome, ack, ack_sent FROM commands WHERE id = ?",
            (command_id,),
        ).fetchone()
        if row is None:
            return None
        return CommandRecord(
            id=row[0],
            counter=row[1],
            compartment=row[2],
            outcome=row[3],
            ack=None if row[4] is None else bytes(row[4]),
            ack_sent=bool(row[5]),
        )

    def record_command(
        self,
        command_id: str,
        *,
        counter: int | None,
        compartment: str | None,
        outcome: str | None,
        ack: bytes | None,
        now: float,
    ) -> None:
        """Remember a command before acting on it: its row keeps its counter, which the
        replay window then counts as seen (durably: the row is the window's memory),
        and the high-water mark rises with it."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO commands (id, counter, compartment, outcome, ack, created) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (command_id, counter, compartment, outcome, ack, now),
            )
            if ack is not None and cur.rowcount:
                self._on_commit.append(lambda: self._ack_waiting(command_id, ack))
            if counter is not None:
                if counter > self._tx_hwm:
                    self._tx_hwm = counter  # its row is the mark (see the module's docstring)
                self._on_commit.append(lambda: self._window.add(counter))
            self._since_trim += 1
            if self._since_trim >= _TRIM_EVERY:
                self._since_trim = 0
                # Never a counter still inside the window (the mark only rises, so a
                # counter at or below its floor stays there).
                db.execute(
                    "DELETE FROM commands WHERE id IN (SELECT id FROM commands "
                    "WHERE ack_sent = 1 AND (counter IS NULL OR counter <= ?) "
                    "ORDER BY created DESC LIMIT -1 OFFSET ?)",
                    (self._tx_hwm - REPLAY_WINDOW, _KEEP_COMMANDS),
                )

    def _ack_waiting(self, command_id: str, ack: bytes) -> None:
        self._acks_sent.discard(command_id)
        self._unsent[command_id] = ack

    def finish_command(self, command_id: str, outcome: str, ack: bytes) -> None:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE commands SET outcome = ?, ack = ?, ack_sent = 0 "
                "WHERE id = ? AND outcome IS NULL",
                (outcome, ack, command_id),
            )
            if cur.rowcount:
                self._on_commit.append(lambda: self._ack_waiting(command_id, ack))

    def unfinished_commands(self) -> list[CommandRecord]:
        rows = self._db.execute("SELECT id FROM commands WHERE outcome IS NULL").fetchall()
        return [rec for (cid,) in rows if (rec := self.command(cid)) is not None]

    def unsent_acks(self) -> list[tuple[str, bytes]]:
        """Stored acks the broker has not taken yet (asked on every publishing round)."""
        return list(self._unsent.items())

    def requeue_ack(self, command_id: str) -> None:
        """Send a stored ack again (a duplicate delivery of its command)."""
        with self._tx() as db:
            row = db.execute(
                "UPDATE commands SET ack_sent = 0 WHERE id = ? AND ack IS NOT NULL RETURNING ack",
                (command_id,),
            ).fetchone()
            if row is not None:
                ack = bytes(row[0])
                self._on_commit.append(lambda: self._ack_waiting(command_id, ack))

    def mark_ack_sent(self, command_id: str) -> None:
        """The broker has the ack. Written with the next receipt (or after
        :data:`BOOKKEEPING_MAX_AGE_S`): lost, the ack is sent again (the cloud ignores
        an ack for a command that is already final)."""
        self._unsent.pop(command_id, None)
        self._acks_sent.add(command_id)
        self._bookkeeping_added()

    # -- desired state -------------------------------------------------------------

    def desired(self) -> tuple[int, bytes] | None:
        row = self._db.execute("SELECT version, payload FROM desired WHERE id = 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def save_desired(self, version: int, payload: bytes) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO desired (id, version, payload) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET version = excluded.version, "
                "payload = excluded.payload",
                (version, payload),
            )

    # -- codes and throttle ----------------------------------------------------------

    def code_used(self, code_hash: str) -> bool:
        row = self._db.execute("SELECT 1 FROM used_codes WHERE hash = ?", (code_hash,))
        return row.fetchone() is not None

    def use_code(self, code_hash: str, now: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO used_codes (hash, used_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (code_hash, now),
            )

    def forget_used_codes(self, keep: set[str]) -> int:
        """Forget used codes that are no longer granted (the table stays small)."""
        with self._tx() as db:
            stale = [(h,) for (h,) in db.execute("SELECT hash FROM used_codes") if h not in keep]
            db.executemany("DELETE FROM used_codes WHERE hash = ?", stale)
        return len(stale)

    def throttle(self, kiosk: str) -> ThrottleRecord:
        row = self._db.execute(
            "SELECT failures, last_failure, locked_until FROM throttle WHERE kiosk = ?",
            (kiosk,),
        ).fetchone()
        if row is None:
            return ThrottleRecord(0, 0.0, 0.0)
        return ThrottleRecord(int(row[0]), float(row[1]), float(row[2]))

    def save_throttle(self, kiosk: str, record: ThrottleRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO throttle (kiosk, failures, last_failure, locked_until) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (kiosk) DO UPDATE SET "
                "failures = excluded.failures, last_failure = excluded.last_failure, "
                "locked_until = excluded.locked_until",
                (kiosk, record.failures, record.last_failure, record.locked_until),
            )

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])
