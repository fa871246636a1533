"""The writer thread: one transaction per batch, commit, then acknowledge.

A batch becomes, in ONE transaction on a sync psycopg connection:

1. refused messages (malformed, unknown ``v``, wrong topic, cabinet mismatch,
   unknown cabinet) → ``dead_letters``;
2. the events' cabinet cursors (:mod:`.cursors`), the events binary-COPYed into
   ``events`` (should the unique key refuse it, another worker having committed one
   meanwhile, the transaction again with the COPY into a temp table and
   ``INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING``, which says which are
   new); ``reactions.on_events`` with the new ones; cursors advanced (:mod:`.receipts`);
3. telemetry likewise (``on_telemetry``), status (:mod:`.presence`), acks and
   reported (``on_ack``, ``on_reported``); ``last_seen``.

Then commit. A batch with acks and other messages commits its acks first, in a
transaction of their own (the ack fast path: an API request may be waiting). Only
then the :class:`Outcome` goes back to the event loop, which PUBACKs the messages
and publishes receipts, and the effects go to the downlink.
A lost database connection keeps the batch and retries it until it commits (the
messages stay un-PUBACKed meanwhile); any other failure splits the batch and
retries message by message, dead-lettering the ones that still fail, so one bad
message never blocks the stream.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from smartlocker.protocol import Status, Telemetry

from . import presence
from .cursors import CursorStore, lock_cursors, new_version
from .deadletter import Reason, write_dead_letters
from .intake import (
    EventModels,
    EventRow,
    Inbound,
    Sorted,
    TopicCache,
    dead_letter_for,
    sort_batch,
)
from .metrics import IngestMetrics
from .receipts import Cursor, EventKey, advance, advance_run
from .seam import Deliver, Rules, known_cabinets

__all__ = ["Outcome", "Writer", "WriterSettings"]

logger = logging.getLogger(__name__)

#: Made afresh in each transaction that needs it (rare: a concurrent duplicate), so its
#: ``body`` always has the type ``events.body`` has now (migration 0010 changed it).
_STAGE = "CREATE TEMP TABLE IF NOT EXISTS ingest_stage (LIKE events) ON COMMIT DROP"
_COLUMNS = "(cabinet, seq, ts, id, type, compartment, body, received_at)"
_COPY_EVENTS = f"COPY events {_COLUMNS} FROM STDIN (FORMAT BINARY)"
_COPY = f"COPY ingest_stage {_COLUMNS} FROM STDIN (FORMAT BINARY)"
#: ``body`` goes as the payload's bytes, already in the column's binary wire form: for
#: ``json`` (migration 0010) that is the text; for ``jsonb`` (before it) a version byte,
#: then the text. No re-encoding here.
_COPY_TYPES = ["text", "int8", "timestamptz", "text", "text", "text", "bytea", "timestamptz"]
_BODY_TYPE = (
    "SELECT atttypid::regtype::text FROM pg_attribute"
    " WHERE attrelid = 'events'::regclass AND attname = 'body'"
)
_MOVE = (
    "INSERT INTO events (cabinet, seq, ts, id, type, compartment, body, received_at)"
    " SELECT cabinet, seq, ts, id, type, compartment, body, received_at"
    " FROM ingest_stage ON CONFLICT DO NOTHING RETURNING cabinet, seq, ts"
)


class _ConcurrentDuplicate(Exception):
    """The COPY of a batch's events met one another worker committed meanwhile."""


#: Seconds a provisioned cabinet is trusted without asking the database again.
KNOWN_CABINETS_TTL = 60.0


@dataclass(frozen=True, slots=True)
class WriterSettings:
    database_url: str
    policy: presence.PresencePolicy = field(default_factory=presence.PresencePolicy)
    sweep_interval: float = 2.0
    retry_delay: float = 0.5
    max_retry_delay: float = 5.0
    #: Writers (threads, each with its own connection) sharing the cabinets (.shards).
    writers: int = 2
    #: Whether this writer sweeps presence and runs the rules' ticks (one of them does).
    sweeps: bool = True
    #: Acks on a writer of their own (.acklane), else urgent items of the batches.
    ack_lane: bool = True


@dataclass(slots=True)
class Outcome:
    """What a committed batch means for the loop: acks, receipts, counts."""

    items: Sequence[Inbound]
    receipts: dict[str, int] = field(default_factory=dict)
    new_events: int = 0
    duplicates: int = 0
    dead: int = 0
    committed_at: float = 0.0


def _distinct(
    events: list[EventRow],
) -> tuple[list[EventRow], dict[str, list[EventRow]]]:
    """The batch's events without repeats of one key, also grouped by cabinet.

    Keyed by ``(cabinet, seq)`` first: hashing an aware datetime is slow, and a
    seq seen twice with two different ``ts`` (a re-imaged cabinet) is rare; then
    the whole batch is done again by the full key ``(cabinet, seq, ts)``.
    """
    seen: dict[tuple[str, int], EventRow] = {}
    unique: list[EventRow] = []
    per_cabinet: dict[str, list[EventRow]] = {}
    for row in events:
        key = (row.cabinet, row.seq)
        other = seen.get(key)
        if other is not None:
            if other.ts == row.ts:
                continue
            return _distinct_by_full_key(events)
        seen[key] = row
        unique.append(row)
        rows = per_cabinet.get(row.cabinet)
        if rows is None:
            per_cabinet[row.cabinet] = [row]
        else:
            rows.append(row)
    return unique, per_cabinet


def _distinct_by_full_key(
    events: list[EventRow],
) -> tuple[list[EventRow], dict[str, list[EventRow]]]:
    seen: dict[tuple[str, int, datetime], EventRow] = {}
    per_cabinet: dict[str, list[EventRow]] = {}
    for row in events:
        key = row.key
        if key not in seen:
            seen[key] = row
            per_cabinet.setdefault(row.cabinet, []).append(row)
    return list(seen.values()), per_cabinet


class Writer:
    """Owns the database connection; batches come in through :meth:`submit`."""

    #: psycopg's transactions (False), or BEGIN/COMMIT sent by hand (the ack lane).
    AUTOCOMMIT = False

    def __init__(
        self,
        settings: WriterSettings,
        rules: Rules,
        topics: TopicCache,
        on_committed: Callable[[Outcome], None],
        *,
        deliver: Deliver | None = None,
        metrics: IngestMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        name: str = "ingest-writer",
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.topics = topics
        self.on_committed = on_committed
        self.deliver = deliver
        self.metrics = metrics or IngestMetrics()
        self.clock = clock
        self._queue: queue.Queue[tuple[list[Inbound], Sorted | None] | None] = queue.Queue()
        self._conn: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._next_sweep = 0.0
        #: last_seen this worker wrote per cabinet (fewer writes; see _write_presence).
        self._touched: dict[str, datetime] = {}
        self._known: set[str] = set()
        self._known_since = 0.0
        #: Receipt cursors as this writer committed them (forgotten when a batch fails).
        self._cursors = CursorStore()
        #: The cursors a batch writes, remembered once it commits.
        self._written: tuple[dict[str, Cursor], int] | None = None
        #: What goes before a payload in ``events.body``'s binary form (see _body_prefix).
        self._prefix: bytes | None = None

    # -- control (any thread) -----------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, batch: list[Inbound]) -> None:
        """Queue a batch, decoded here, in the caller's thread (the event loop).

        Decoding is pure Python with no database: done while the writer thread
        waits for PostgreSQL on the previous batch, it costs the writer nothing.
        """
        try:
            sorted_: Sorted | None = sort_batch(batch, self.topics)
        except Exception:  # the writer decodes it again, and copes
            logger.exception("decoding a batch of %d failed", len(batch))
            sorted_ = None
        self._queue.put((batch, sorted_))

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what was submitted (if the database lets us), then close."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._stop.set()
        self._thread.join(timeout)

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                timeout = max(0.05, self._next_sweep - time.monotonic())
                try:
                    queued = self._next(timeout)
                except queue.Empty:
                    queued = ([], None)
                if queued is None:
                    return
                batch, sorted_ = queued
                if batch:
                    outcome = self._commit_with_retry(batch, sorted_)
                    if outcome is None:
                        return
                    self.on_committed(outcome)
                if time.monotonic() >= self._next_sweep:
                    self._next_sweep = time.monotonic() + self.settings.sweep_interval
                    if self.settings.sweeps:
                        self._guarded(self._sweep)
        finally:
            if self._conn is not None:
                self._conn.close()

    def _next(self, timeout: float) -> tuple[list[Inbound], Sorted | None] | None:
        """The next queued batch (``None``: stop); ``queue.Empty`` after ``timeout``."""
        return self._queue.get(timeout=timeout)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.settings.database_url, autocommit=self.AUTOCOMMIT)
            logger.info("%s connected to the database", self._thread.name)
        return self._conn

    def _drop_connection(self) -> None:
        self._prefix = None
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _commit_with_retry(self, batch: list[Inbound], sorted_: Sorted | None) -> Outcome | None:
        delay = self.settings.retry_delay
        while not self._stop.is_set():
            try:
                # A retry decodes again: the failed attempt may have changed sorted_.
                first, sorted_ = sorted_, None
                return self._commit(batch, first)
            except psycopg.OperationalError as exc:
                self.metrics.db_errors.inc()
                self._touched.clear()  # what the rolled-back batch "wrote" was not
                self._cursors.forget()
                logger.warning("database unavailable (%s); retrying in %.1fs", exc, delay)
                self._drop_connection()
            except Exception:
                self._touched.clear()
                self._cursors.forget()
                self._prefix = None  # events.body's type may have changed (a migration)
                self.metrics.db_errors.inc()
                logger.exception("batch of %d failed; retrying one by one", len(batch))
                self._rollback()
                try:
                    return self._commit_singly(batch)
                except psycopg.OperationalError as exc:
                    logger.warning("database unavailable (%s); retrying in %.1fs", exc, delay)
                    self._drop_connection()
            self._stop.wait(delay)
            delay = min(delay * 2, self.settings.max_retry_delay)
        return None

    def _rollback(self) -> None:
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.rollback()
            except psycopg.Error:
                self._drop_connection()

    def _guarded(self, work: Callable[[], None]) -> None:
        try:
            work()
        except psycopg.OperationalError as exc:
            logger.warning("database unavailable during maintenance: %s", exc)
            self._drop_connection()
        except Exception:
            logger.exception("maintenance failed")
            self._rollback()

    # -- one batch ---------------------------------------------------------------------

    def _commit(self, batch: Sequence[Inbound], sorted_: Sorted | None = None) -> Outcome:
        started = time.perf_counter()
        conn = self._connection()
        now = self.clock()
        if sorted_ is None:
            sorted_ = sort_batch(batch, self.topics)
        outcome = Outcome(items=batch)
        effects: list[Any] = []
        self._written = None
        checked = False
        if sorted_.acks and len(sorted_.acks) < len(batch):
            # The ack fast path: acks commit first, on their own, so the NOTIFY that
            # wakes a waiting API request does not wait for the events' rules. Safe
            # in either order: an ack moves only its command (and its alerts); the
            # events' rules read a command's purpose and parcel, never its status.
            with conn.transaction():
                self._refuse_unknown(conn, sorted_)
                for ack in sorted_.acks:
                    effects.append(self.rules.on_ack(conn, ack, now))
            checked = True
        refused = checked
        kept = len(effects)
        for stage in (False, True):
            try:
                with conn.transaction():
                    if not refused:
                        self._refuse_unknown(conn, sorted_)  # sorted_ keeps what it refused
                        refused = True
                    self._write_events(conn, sorted_, now, outcome, effects, stage)
                    self._write_telemetry(conn, sorted_, now, effects)
                    self._write_presence(conn, sorted_, now, effects)
                    if not checked:
                        for ack in sorted_.acks:
                            effects.append(self.rules.on_ack(conn, ack, now))
                    for rep in sorted_.reported:
                        effects.append(self.rules.on_reported(conn, rep, now))
                    write_dead_letters(conn, sorted_.dead)
                break
            except _ConcurrentDuplicate as exc:
                if stage:
                    raise RuntimeError("duplicate events refused by the staged insert") from None
                # Rolled back: before the COPY only the cursors were read (and locked),
                # and they are again. The batch again, through staging.
                logger.info(
                    "concurrent duplicate in a batch of %d; inserting with ON CONFLICT", *exc.args
                )
                del effects[kept:]
                self._written = None
        if self._written is not None:
            self._cursors.committed(*self._written)
            self._written = None
        outcome.dead = len(sorted_.dead)
        outcome.committed_at = time.time()
        self._account(sorted_, outcome, time.perf_counter() - started)
        self._deliver(conn, effects)
        return outcome

    def _commit_singly(self, batch: Sequence[Inbound]) -> Outcome:
        """Each message in its own transaction; what fails is dead-lettered."""
        total = Outcome(items=batch)
        for item in batch:
            try:
                one = self._commit([item])
            except psycopg.OperationalError:
                raise
            except Exception as exc:
                logger.exception("message on %s refused by the rules", item.topic)
                self._rollback()
                conn = self._connection()
                with conn.transaction():
                    write_dead_letters(
                        conn,
                        [dead_letter_for(item, Reason.PROCESSING_ERROR, repr(exc))],
                    )
                self.metrics.dead_letters.labels(Reason.PROCESSING_ERROR.value).inc()
                total.dead += 1
                continue
            total.receipts.update(one.receipts)
            total.new_events += one.new_events
            total.duplicates += one.duplicates
            total.dead += one.dead
        total.committed_at = time.time()
        return total

    def _refuse_unknown(self, conn: psycopg.Connection[Any], s: Sorted) -> None:
        cabinets = s.cabinets()
        if not cabinets:
            return
        # Provisioned cabinets are remembered for a minute (one query per batch spared);
        # a cabinet not known yet is looked up every time, so new ones count at once.
        clock = time.monotonic()
        if clock - self._known_since > KNOWN_CABINETS_TTL:
            self._known.clear()
            self._known_since = clock
        ask = cabinets - self._known
        if not ask:
            return
        found = known_cabinets(conn, ask)
        self._known |= found
        unknown = ask - found
        if not unknown:
            return

        def keep(message: Any, item: Inbound | None = None) -> bool:
            if message.cabinet not in unknown:
                return True
            item = item or s.origin[id(message)]
            s.dead.append(
                dead_letter_for(item, Reason.UNKNOWN_CABINET, f"cabinet {message.cabinet!r}")
            )
            return False

        s.events = [r for r in s.events if keep(r, r.item)]
        s.telemetry = [m for m in s.telemetry if keep(m)]
        s.statuses = [m for m in s.statuses if keep(m)]
        s.acks = [m for m in s.acks if keep(m)]
        s.reported = [m for m in s.reported if keep(m)]

    def _write_events(
        self,
        conn: psycopg.Connection[Any],
        s: Sorted,
        now: datetime,
        outcome: Outcome,
        effects: list[Any],
        stage: bool = False,
    ) -> None:
        if not s.events:
            return
        unique, per_cabinet = _distinct(s.events)
        before = self._cursors.load(conn, per_cabinet)
        # Every committed event went through its cursor, so an event above the
        # committed seq and not among those waiting above a gap is new: only the
        # others are looked up. The unique key still decides (see _insert_events).
        seqs: dict[str, list[int]] = {}
        maybe_old: list[tuple[str, int, datetime]] = []
        for name, rows in per_cabinet.items():
            c = before[name]
            got = seqs[name] = [r.seq for r in rows]
            if c.ahead or min(got) <= c.committed_seq:
                q, ahead = c.committed_seq, c.ahead
                maybe_old.extend(r.key for r in rows if r.seq <= q or r.seq in ahead)
        old = self._existing(conn, maybe_old) if maybe_old else set()
        fresh = [r for r in unique if r.key not in old] if old else unique
        inserted = self._insert_events(conn, fresh, stage)
        new_count = len(fresh) if inserted is None else len(inserted)
        outcome.new_events = new_count
        outcome.duplicates = len(s.events) - new_count

        def is_new(key: tuple[str, int, datetime]) -> bool:
            return key not in old if inserted is None else key in inserted

        after: dict[str, Cursor] = {}
        for name, rows in per_cabinet.items():
            c = before[name]
            boot = False
            for r in rows:
                if r.type == "boot":
                    boot = True
                    break
            moved = advance_run(c, seqs[name], boot)
            if moved is None:
                keys = [EventKey(r.seq, r.ts, is_new(r.key), r.type == "boot") for r in rows]
                moved = advance(c, keys, now)
            after[name] = moved
        version = new_version()
        stale = self._cursors.store(conn, before, after, now, version)
        if stale:
            # Another worker moved these cursors since we read them: again from the rows.
            locked = lock_cursors(conn, stale)
            again = {
                name: advance(
                    locked[name],
                    [
                        EventKey(r.seq, r.ts, is_new(r.key), r.type == "boot")
                        for r in per_cabinet[name]
                    ],
                    now,
                )
                for name in stale
            }
            if self._cursors.store(conn, locked, again, now, version):
                raise RuntimeError(f"locked cursors changed under us: {stale}")
            after.update(again)
        self._written = (after, version)
        outcome.receipts = {n: c.committed_seq for n, c in after.items() if c.receiptable}
        if new_count:
            new = fresh if inserted is None else [r for r in fresh if r.key in inserted]
            effects.append(self.rules.on_events(conn, EventModels(new), now))

    @staticmethod
    def _existing(
        conn: psycopg.Connection[Any], keys: list[tuple[str, int, datetime]]
    ) -> set[tuple[str, int, datetime]]:
        rows = conn.execute(
            "SELECT e.cabinet, e.seq, e.ts FROM events e"
            " JOIN unnest(%s::text[], %s::bigint[], %s::timestamptz[]) AS u(c, s, t)"
            " ON e.cabinet = u.c AND e.seq = u.s AND e.ts = u.t",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
        ).fetchall()
        return {(r[0], r[1], r[2]) for r in rows}

    def _insert_events(
        self, conn: psycopg.Connection[Any], fresh: list[EventRow], stage: bool = False
    ) -> set[tuple[str, int, datetime]] | None:
        """COPY the new events straight into ``events``.

        Returns ``None`` when all of ``fresh`` went in (the usual case: no set of
        keys to build), else the keys of those that did. If another worker
        committed one of them meanwhile, the unique key refuses the COPY and so the
        transaction (:class:`_ConcurrentDuplicate`): the caller runs it again with
        ``stage``, staging + ``INSERT … ON CONFLICT DO NOTHING RETURNING``. (A
        savepoint around the COPY would cost two round trips in every batch for
        what is rare; nothing before the COPY writes.)
        """
        if not fresh:
            return set()
        prefix = self._body_prefix(conn)
        if not stage:
            try:
                with conn.cursor() as cur, cur.copy(_COPY_EVENTS) as copy:
                    _copy_rows(copy, fresh, prefix)
                return None
            except psycopg.errors.UniqueViolation as exc:
                raise _ConcurrentDuplicate(len(fresh)) from exc
        with conn.cursor() as cur:
            conn.execute(_STAGE)
            with cur.copy(_COPY) as copy:
                _copy_rows(copy, fresh, prefix)
            cur.execute(_MOVE)
            return {(r[0], r[1], r[2]) for r in cur.fetchall()}

    def _body_prefix(self, conn: psycopg.Connection[Any]) -> bytes:
        """``b""`` for a ``json`` body, jsonb's version byte for ``jsonb``.

        Asked once per connection (and again after a failed batch), so this
        writer works before and after migration 0010 changes the column's type.
        """
        if self._prefix is None:
            row = conn.execute(_BODY_TYPE).fetchone()
            self._prefix = b"\x01" if row is not None and row[0] == "jsonb" else b""
        return self._prefix

    def _write_telemetry(
        self, conn: psycopg.Connection[Any], s: Sorted, now: datetime, effects: list[Any]
    ) -> None:
        if not s.telemetry:
            return
        rows = s.telemetry
        got = conn.execute(
            "INSERT INTO telemetry (cabinet, ts, id, uptime_s, outbox_depth, cpu_temp_c,"
            " compartment_temps, received_at)"
            " SELECT c, t, i, u, o, p, j::jsonb, %s FROM unnest(%s::text[], %s::timestamptz[],"
            " %s::text[], %s::float8[], %s::int[], %s::float8[], %s::text[])"
            " AS x(c, t, i, u, o, p, j)"
            " ON CONFLICT DO NOTHING RETURNING cabinet, ts, id",
            (
                now,
                [m.cabinet for m in rows],
                [m.ts for m in rows],
                [m.id for m in rows],
                [m.uptime_s for m in rows],
                [m.outbox_depth for m in rows],
                [m.cpu_temp_c for m in rows],
                [json.dumps(m.compartment_temps) for m in rows],
            ),
        ).fetchall()
        fresh = {(r[0], r[1], r[2]) for r in got}
        new: list[Telemetry] = [m for m in rows if (m.cabinet, m.ts, m.id) in fresh]
        if new:
            effects.append(self.rules.on_telemetry(conn, new, now))

    def _due_touches(self, cabinets: Iterable[str], now: datetime) -> list[str]:
        """Those of ``cabinets`` whose ``last_seen`` this writer has not moved lately.

        ``last_seen`` moves in steps of ``TOUCH_RESOLUTION``: one statement per
        message spared. The chosen ones count as written from now.
        """
        step = presence.TOUCH_RESOLUTION
        written = self._touched
        if len(written) > 1_000_000:
            written.clear()
        due = [
            name
            for name in cabinets
            if (w := written.get(name)) is None or now - w >= step or now < w
        ]
        written.update(dict.fromkeys(due, now))
        return due

    def _write_presence(
        self, conn: psycopg.Connection[Any], s: Sorted, now: datetime, effects: list[Any]
    ) -> None:
        # Seen now, at receipt: never the cabinet's ``ts``. A cabinet whose clock runs
        # behind by more than the heartbeat timeout would otherwise look silent at
        # every sweep and flap offline and online while it is talking all the time.
        seen: set[str] = set()
        for group in (s.telemetry, s.acks, s.reported):
            seen.update(m.cabinet for m in group)
        seen.update(r.cabinet for r in s.events)
        seen.update(st.cabinet for st in s.statuses if st.online)
        back = presence.touch(conn, dict.fromkeys(self._due_touches(seen, now), now))
        births = {st.cabinet for st in s.statuses if st.online}
        revived = [(name, at) for name, at in back if name not in births]
        for name, at in revived:
            effects.append(
                self.rules.on_status(conn, Status(cabinet=name, online=True, ts=at), now)
            )
        presence.mark_online(conn, [name for name, _ in revived], now)
        if s.statuses:
            presence.apply_statuses(
                conn,
                s.statuses,
                now,
                lambda st: effects.append(self.rules.on_status(conn, st, now)),
            )

    def _sweep(self) -> None:
        conn = self._connection()
        now = self.clock()
        effects: list[Any] = []
        self._touched.clear()  # so traffic from cabinets swept offline revives them at once
        with conn.transaction():
            presence.sweep(
                conn,
                now,
                self.settings.policy,
                lambda st: effects.append(self.rules.on_status(conn, st, now)),
                lambda name, seen: effects.append(self.rules.on_silence(conn, name, seen, now)),
            )
            # Deadlines and expiries of the rules (parcels, commands) ride on the sweep.
            effects.append(self.rules.on_tick(conn, now))
        self._deliver(conn, effects)

    def _deliver(self, conn: psycopg.Connection[Any], effects: list[Any]) -> None:
        effects = [e for e in effects if e]
        if not effects or self.deliver is None:
            return
        try:
            self.deliver(conn, effects)
        except psycopg.OperationalError as exc:
            logger.warning(
                "downlink of %d effect(s) failed: database unavailable (%s)", len(effects), exc
            )
            self._drop_connection()
        except Exception:
            # Committed state is the truth: a desired state not published now is
            # republished by the next change or the cabinet's next report.
            logger.exception("downlink of %d effect(s) failed", len(effects))
            self._rollback()

    def _account(self, s: Sorted, outcome: Outcome, seconds: float) -> None:
        m = self.metrics
        m.batches.inc()
        m.batch_size.observe(len(outcome.items))
        m.commit_seconds.observe(seconds)
        m.events_new.inc(outcome.new_events)
        m.events_duplicate.inc(outcome.duplicates)
        for d in s.dead:
            m.dead_letters.labels(d.reason.value).inc()
        if s.events:
            # publish → commit, from the event's own ts (sampled: 1 in 8).
            now = outcome.committed_at
            for row in s.events[::8]:
                m.publish_to_commit.observe(max(0.0, now - row.ts.timestamp()))


def _copy_rows(copy: psycopg.Copy, rows: list[EventRow], prefix: bytes) -> None:
    """Event rows into a binary COPY; ``body`` is the payload as received, after
    ``prefix`` (jsonb's version byte while the column is jsonb, see _body_prefix)."""
    copy.set_types(_COPY_TYPES)
    write = copy.write_row
    for r in rows:
        item = r.item
        write(
            (
                r.cabinet,
                r.seq,
                r.ts,
                r.id,
                r.type,
                r.compartment,
                prefix + item.payload if prefix else item.payload,
                item.received_at,
            )
        )
