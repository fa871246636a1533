"""The agent's one SQLite database (WAL, ``synchronous=FULL``).

It holds the event outbox with its persistent ``seq``, a bounded telemetry queue,
the command high-water mark and the stored result of every command, the applied
desired state, used codes and the kiosk throttle. Every write is one transaction,
committed before anything that depends on it happens (publish, pulse, answer), so a
power cut or SIGKILL at any point leaves a consistent database.

Writes that belong together share one transaction (:meth:`Store.atomic`): a command
and its ``unlocked`` event, a door's event and the ack it resolves. Bookkeeping whose
loss costs only a repetition (an ack marked sent, events dropped after a receipt) is
committed without waiting for the disk (:meth:`Store._tx` with ``durable=False``):
WAL keeps it in order behind every earlier commit, and the next durable commit
flushes it too, so a power cut can only make the agent send such things again.

Not thread-safe by itself: the agent calls it under its one state lock.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .errors import StoreError

__all__ = ["CommandRecord", "Store", "ThrottleRecord"]

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

#: Stored command results kept for duplicate deliveries (the high-water mark
#: refuses anything older anyway).
_KEEP_COMMANDS = 5000
#: Old command results are trimmed once per this many new commands (not on each).
_TRIM_EVERY = 100


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
        except BaseException:
            self._db.close()
            raise
        self._depth = 0
        self._since_trim = 0

    def close(self) -> None:
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
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        finally:
            self._depth = 0
            if not durable:
                self._db.execute("PRAGMA synchronous=FULL")

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
            seq = self._meta("next_seq", 1)
            result, payload = build(seq)
            db.execute("INSERT INTO outbox (seq, payload) VALUES (?, ?)", (seq, payload))
            self._set_meta("next_seq", seq + 1)
        return result

    @property
    def last_seq(self) -> int:
        """The highest ``seq`` ever given out (0 before the first event)."""
        return self._meta("next_seq", 1) - 1

    def pending_events(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Unreceipted events with ``seq > after``, in order."""
        rows = self._db.execute(
            "SELECT seq, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
        return [(int(seq), bytes(payload)) for seq, payload in rows]

    def first_unreceipted(self) -> int | None:
        row = self._db.execute("SELECT min(seq) FROM outbox").fetchone()
        return None if row[0] is None else int(row[0])

    def outbox_depth(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def receipt(self, upto_seq: int) -> int:
        """Drop events up to ``upto_seq``; returns how many were dropped.

        Not flushed to disk at once: lost to a power cut, the events are sent again
        and the cloud de-duplicates them.
        """
        with self._tx(durable=False) as db:
            cur = db.execute("DELETE FROM outbox WHERE seq <= ?", (upto_seq,))
            return cur.rowcount

    # -- telemetry (bounded, may be dropped) -----------------------------------

    def add_telemetry(self, payload: bytes, keep: int) -> None:
        with self._tx() as db:
            cur = db.execute("INSERT INTO telemetry (payload) VALUES (?)", (payload,))
            newest = int(cur.lastrowid or 0)
            dropped = db.execute("DELETE FROM telemetry WHERE id <= ?", (newest - keep,))
            if dropped.rowcount:
                logger.info("telemetry queue full: dropped %d oldest readings", dropped.rowcount)

    def pending_telemetry(self, limit: int = 100) -> list[tuple[int, bytes]]:
        rows = self._db.execute(
            "SELECT id, payload FROM telemetry ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [(int(i), bytes(p)) for i, p in rows]

    def drop_telemetry(self, row_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM telemetry WHERE id = ?", (row_id,))

    # -- commands ----------------------------------------------------------------

    @property
    def command_high_water(self) -> int:
        return self._meta("command_hwm", 0)

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
        """Remember a command (and raise the high-water mark) before acting on it."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO commands (id, counter, compartment, outcome, ack, created) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (command_id, counter, compartment, outcome, ack, now),
            )
            if counter is not None and counter > self._meta("command_hwm", 0):
                self._set_meta("command_hwm", counter)
            self._since_trim += 1
            if self._since_trim >= _TRIM_EVERY:
                self._since_trim = 0
                db.execute(
                    "DELETE FROM commands WHERE id IN (SELECT id FROM commands "
                    "WHERE ack_sent = 1 ORDER BY created DESC LIMIT -1 OFFSET ?)",
                    (_KEEP_COMMANDS,),
                )

    def finish_command(self, command_id: str, outcome: str, ack: bytes) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE commands SET outcome = ?, ack = ?, ack_sent = 0 "
                "WHERE id = ? AND outcome IS NULL",
                (outcome, ack, command_id),
            )

    def unfinished_commands(self) -> list[CommandRecord]:
        rows = self._db.execute("SELECT id FROM commands WHERE outcome IS NULL").fetchall()
        return [rec for (cid,) in rows if (rec := self.command(cid)) is not None]

    def unsent_acks(self) -> list[tuple[str, bytes]]:
        rows = self._db.execute(
            "SELECT id, ack FROM commands WHERE ack IS NOT NULL AND ack_sent = 0 ORDER BY created"
        ).fetchall()
        return [(str(i), bytes(a)) for i, a in rows]

    def requeue_ack(self, command_id: str) -> None:
        """Send a stored ack again (a duplicate delivery of its command)."""
        with self._tx() as db:
            db.execute(
                "UPDATE commands SET ack_sent = 0 WHERE id = ? AND ack IS NOT NULL", (command_id,)
            )

    def mark_ack_sent(self, command_id: str) -> None:
        """The broker has the ack. Not flushed at once: lost, the ack is sent again
        (the cloud ignores an ack for a command that is already final)."""
        with self._tx(durable=False) as db:
            db.execute("UPDATE commands SET ack_sent = 1 WHERE id = ?", (command_id,))

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
