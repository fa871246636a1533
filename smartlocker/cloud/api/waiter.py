"""Wait for a command's outcome across processes: PostgreSQL LISTEN/NOTIFY.

When ingest stores a cabinet's ack, the commands row changes and a trigger (see
migrations ``0004_api.sql`` and ``0007_command_outcome_notify.sql``) sends
``NOTIFY smartlocker_command`` on commit, with the command's final outcome as JSON
(``{"id", "status", "outcome", "outcome_reason"}``; a bare id, the older form, is
understood too). Each API process keeps ONE listening connection in a thread and
wakes the requests waiting for that id, whichever worker published the command,
handing them the payload so they need not read the row again. A waiter re-reads the
row after registering and at least every ``recheck`` seconds, so a notification lost
to a reconnect only costs latency, never the answer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

__all__ = ["CHANNEL", "CommandWaiter", "Note", "Watch", "parse_note"]

logger = logging.getLogger(__name__)

CHANNEL = "smartlocker_command"
T = TypeVar("T")

#: What a notification said about its key (the trigger's JSON), None for a bare id.
Note = dict[str, Any] | None


def parse_note(payload: str) -> tuple[str, Note]:
    """``(key, fields)`` of a notification payload: JSON with an ``id``, or a bare id."""
    if payload.startswith("{"):
        try:
            data = json.loads(payload)
        except ValueError:
            logger.warning("unreadable notification on %s: %.100r", CHANNEL, payload)
            return payload, None
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            return data["id"], data
        logger.warning("notification on %s without an id: %.100r", CHANNEL, payload)
    return payload, None


class _Slot:
    """One waiting request: woken by :meth:`set`, with the latest note of its key."""

    __slots__ = ("event", "note")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.note: Note = None

    def set(self, note: Note) -> None:
        if note is not None:
            self.note = note
        self.event.set()


class Watch:
    """One registered interest in a key (see :meth:`CommandWaiter.watch`)."""

    def __init__(
        self,
        slot: _Slot,
        recheck: float,
        listen: Callable[[str], None] | None = None,
    ) -> None:
        self._slot = slot
        self._recheck = recheck
        self._listen = listen

    def listen(self, key: str) -> None:
        """Name the key of a :meth:`CommandWaiter.watch_later` (once it is known)."""
        if self._listen is None:
            raise RuntimeError("this watch already has its key")
        self._listen(key)
        self._listen = None

    def wait(self, check: Callable[[Note], T | None], timeout: float) -> T | None:
        """Sleep until notified (or ``recheck`` passed), then ``check(note)``; until ``timeout``.

        ``note`` is what the latest notification of the key said (None if none came
        or it was a bare id): ``check`` may answer from it without reading the row.
        """
        deadline = time.monotonic() + timeout
        slot = self._slot
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return check(slot.note)
            slot.event.wait(min(remaining, self._recheck))
            slot.event.clear()
            result = check(slot.note)
            if result is not None:
                return result


class CommandWaiter:
    """One LISTEN connection per process, started on first use."""

    def __init__(self, url: str, *, recheck: float = 1.0) -> None:
        self._url = url
        self._recheck = recheck
        self._lock = threading.Lock()
        self._waiting: dict[str, set[_Slot]] = {}
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None

    def wait(self, key: str, check: Callable[[Note], T | None], timeout: float) -> T | None:
        """``check(note)``'s first non-None result, re-checked when ``key`` is notified."""
        with self.watch(key) as watch:
            result = check(None)
            return result if result is not None else watch.wait(check, timeout)

    @contextmanager
    def watch(self, key: str) -> Iterator[Watch]:
        """Listen for ``key`` from now on (register before causing what you wait for)."""
        self._ensure_started()
        slot = _Slot()
        with self._lock:
            self._waiting.setdefault(key, set()).add(slot)
        try:
            yield Watch(slot, self._recheck)
        finally:
            with self._lock:
                slots = self._waiting.get(key)
                if slots is not None:
                    slots.discard(slot)
                    if not slots:
                        del self._waiting[key]

    @contextmanager
    def watch_later(self) -> Iterator[Watch]:
        """A watch whose key is given later by :meth:`Watch.listen` (before publishing)."""
        self._ensure_started()
        slot = _Slot()
        keys: list[str] = []

        def listen(key: str) -> None:
            with self._lock:
                self._waiting.setdefault(key, set()).add(slot)
            keys.append(key)

        try:
            yield Watch(slot, self._recheck, listen)
        finally:
            with self._lock:
                for key in keys:
                    slots = self._waiting.get(key)
                    if slots is not None:
                        slots.discard(slot)
                        if not slots:
                            del self._waiting[key]

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    # -- the listening thread ------------------------------------------------

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="smartlocker-listen", daemon=True
                )
                self._thread.start()
        # A first waiter gives the listener a moment; after that rechecks cover gaps.
        self._listening.wait(2.0)

    def _wake(self, key: str | None, note: Note = None) -> None:
        with self._lock:
            if key is None:
                slots = [e for group in self._waiting.values() for e in group]
            else:
                slots = list(self._waiting.get(key, ()))
        for slot in slots:
            slot.set(note)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    self._wake(None)  # anything may have happened while we were away
                    backoff = 0.1
                    while not self._stop.is_set():
                        for notification in conn.notifies(timeout=0.5):
                            self._wake(*parse_note(notification.payload))
            except psycopg.Error as exc:
                self._listening.clear()
                logger.warning("LISTEN %s lost (%s); reconnecting in %.1fs", CHANNEL, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
