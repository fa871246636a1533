"""One LISTEN connection per API process feeding the dashboard's :class:`~.hub.Hub`.

Started by the first live stream, it runs in a daemon thread until the app closes.
A lost connection is re-opened with a growing pause; after each (re)connect every
stream gets a ``resync``, since notes sent meanwhile are gone.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from .hub import Hub, parse_note

__all__ = ["CHANNEL", "Listener"]

logger = logging.getLogger(__name__)

CHANNEL = "smartlocker_dashboard"


class Listener:
    """LISTEN ``smartlocker_dashboard`` on ``url`` and publish each note to ``hub``."""

    def __init__(self, url: str, hub: Hub, *, poll: float = 0.5) -> None:
        self._url = url
        self._hub = hub
        self._poll = poll
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.listening = threading.Event()

    def ensure_started(self, wait: float = 2.0) -> bool:
        """Start the thread once; True when it is listening (after up to ``wait`` s)."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="smartlocker-dashboard-listen", daemon=True
                )
                self._thread.start()
        return self.listening.wait(wait)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    self._hub.resync_all()
                    backoff = 0.1
                    self._pump(conn)
            except psycopg.Error as exc:
                self.listening.clear()
                logger.warning("LISTEN %s lost (%s); reconnecting in %.1fs", CHANNEL, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self.listening.clear()

    def _pump(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stop.is_set():
            for notify in conn.notifies(timeout=self._poll):
                note = parse_note(notify.payload)
                if note is not None:
                    self._hub.publish(note)
