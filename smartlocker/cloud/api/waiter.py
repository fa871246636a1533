"""Wait for a command's outcome across processes: PostgreSQL LISTEN/NOTIFY.

When ingest stores a cabinet's ack, the commands row changes and a trigger (see
migration ``0004_api.sql``) sends ``NOTIFY smartlocker_command, '<command id>'`` on
commit. Each API process keeps ONE listening connection in a thread and wakes the
requests waiting for that id, whichever worker published the command. A waiter
re-reads the row after registering and at least every ``recheck`` seconds, so a
notification lost to a reconnect only costs latency, never the answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

__all__ = ["CHANNEL", "CommandWaiter", "Watch"]

logger = logging.getLogger(__name__)

CHANNEL = "smartlocker_command"
T = TypeVar("T")


class Watch:
    """One registered interest in a key (see :meth:`CommandWaiter.watch`)."""

    def __init__(
        self,
        event: threading.Event,
        recheck: float,
        listen: Callable[[str], None] | None = None,
    ) -> None:
        self._event = event
        self._recheck = recheck
        self._listen = listen

    def listen(self, key: str) -> None:
        """Name the key of a :meth:`CommandWaiter.watch_later` (once it is known)."""
        if self._listen is None:
            raise RuntimeError("this watch already has its key")
        self._listen(key)
        self._listen = None

    def wait(self, check: Callable[[], T | None], timeout: float) -> T | None:
        """Sleep until notified (or ``recheck`` passed), then ``check()``; until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return check()
            self._event.wait(min(remaining, self._recheck))
            self._event.clear()
            result = check()
            if result is not None:
                return result


class CommandWaiter:
    """One LISTEN connection per process, started on first use."""

    def __init__(self, url: str, *, recheck: float = 1.0) -> None:
        self._url = url
        self._recheck = recheck
        self._lock = threading.Lock()
        self._waiting: dict[str, set[threading.Event]] = {}
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None

    def wait(self, key: str, check: Callable[[], T | None], timeout: float) -> T | None:
        """``check()``'s first non-None result, re-checked when ``key`` is notified."""
        with self.watch(key) as watch:
            result = check()
            return result if result is not None else watch.wait(check, timeout)

    @contextmanager
    def watch(self, key: str) -> Iterator[Watch]:
        """Listen for ``key`` from now on (register before causing what you wait for)."""
        self._ensure_started()
        event = threading.Event()
        with self._lock:
            self._waiting.setdefault(key, set()).add(event)
        try:
            yield Watch(event, self._recheck)
        finally:
            with self._lock:
                events = self._waiting.get(key)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._waiting[key]

    @contextmanager
    def watch_later(self) -> Iterator[Watch]:
        """A watch whose key is given later by :meth:`Watch.listen` (before publishing)."""
        self._ensure_started()
        event = threading.Event()
        keys: list[str] = []

        def listen(key: str) -> None:
            with self._lock:
                self._waiting.setdefault(key, set()).add(event)
            keys.append(key)

        try:
            yield Watch(event, self._recheck, listen)
        finally:
            with self._lock:
                for key in keys:
                    events = self._waiting.get(key)
                    if events is not None:
                        events.discard(event)
                        if not events:
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

    def _wake(self, key: str | None) -> None:
        with self._lock:
            if key is None:
                events = [e for group in self._waiting.values() for e in group]
            else:
                events = list(self._waiting.get(key, ()))
        for event in events:
            event.set()

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
                        for note in conn.notifies(timeout=0.5):
                            self._wake(note.payload)
            except psycopg.Error as exc:
                self._listening.clear()
                logger.warning("LISTEN %s lost (%s); reconnecting in %.1fs", CHANNEL, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
