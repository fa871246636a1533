"""Fan-out of the dashboard's notes to the live streams of one process, by site.

A :class:`Note` is what the database announced (migration ``0006_dashboard.sql``):
what changed, at which site and cabinet. The :class:`Hub` hands each note to every
subscription whose API key reaches that site, and to no other. Each subscription
has a bounded queue: a client that reads too slowly loses its backlog and gets one
``resync`` instead (re-read everything), so one stuck browser never grows memory
nor slows the others. No I/O here; :mod:`.listener` feeds the hub from PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CLOSING",
    "KINDS",
    "RESYNC",
    "Hub",
    "HubFull",
    "Note",
    "Subscription",
    "parse_note",
]

logger = logging.getLogger(__name__)

#: What the database announces (see the migration).
KINDS = frozenset({"compartment", "cabinet", "presence", "alert", "parcel", "events"})
_MAX_PAYLOAD = 8000  # PostgreSQL's own limit on a NOTIFY payload


@dataclass(frozen=True, slots=True)
class Note:
    """One change: its ``kind``, ``site``, ``cabinet`` and the rest of the note."""

    kind: str
    site: str
    cabinet: str | None
    data: Mapping[str, Any]

    def to_json(self) -> str:
        return json.dumps(dict(self.data), separators=(",", ":"))


#: Sent instead of a backlog that overflowed, and after the listener reconnected.
RESYNC = Note(kind="resync", site="", cabinet=None, data={"kind": "resync"})
#: The process is shutting down: the stream says ``bye`` now (the page reconnects to
#: another worker) instead of holding the worker's graceful shutdown until its next
#: heartbeat finds the client gone.
CLOSING = Note(kind="closing", site="", cabinet=None, data={"kind": "closing"})


def parse_note(payload: str) -> Note | None:
    """The note in a NOTIFY payload, or None (logged) when it is not one."""
    if len(payload) > _MAX_PAYLOAD:
        logger.warning("dashboard note refused: %d bytes", len(payload))
        return None
    try:
        data = json.loads(payload)
    except ValueError:
        logger.warning("dashboard note refused: not JSON: %.80r", payload)
        return None
    if not isinstance(data, dict):
        logger.warning("dashboard note refused: not an object: %.80r", payload)
        return None
    kind, site, cabinet = data.get("kind"), data.get("site"), data.get("cabinet")
    if kind not in KINDS or not isinstance(site, str) or not site:
        logger.warning("dashboard note refused: bad kind or site: %.80r", payload)
        return None
    if cabinet is not None and not isinstance(cabinet, str):
        logger.warning("dashboard note refused: bad cabinet: %.80r", payload)
        return None
    return Note(kind=kind, site=site, cabinet=cabinet, data=data)


class HubFull(RuntimeError):
    """This process already serves as many live streams as it may."""


class Subscription:
    """One live stream's queue, limited to the sites of its key (None: all)."""

    def __init__(self, sites: frozenset[str] | None, max_queue: int) -> None:
        self.sites = sites
        self._queue: queue.Queue[Note] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self.dropped = 0

    def wants(self, note: Note) -> bool:
        return note in (RESYNC, CLOSING) or self.sites is None or note.site in self.sites

    def offer(self, note: Note) -> None:
        """Queue ``note``; a full queue is emptied and replaced by one ``resync``."""
        with self._lock:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(note)
                return
            while True:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    break
            self._queue.put_nowait(CLOSING if note is CLOSING else RESYNC)

    def get(self, timeout: float) -> Note | None:
        """The next note, or None when ``timeout`` passed without one."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


class Hub:
    """Every live subscription of this process."""

    def __init__(self, *, max_queue: int = 256, max_subscribers: int = 64) -> None:
        self.max_queue = max_queue
        self.max_subscribers = max_subscribers
        self._lock = threading.Lock()
        self._subs: set[Subscription] = set()
        self._closed = False

    def subscribe(self, sites: frozenset[str] | None) -> Subscription:
        """A new subscription; raises :class:`HubFull` past ``max_subscribers`` or once closed."""
        sub = Subscription(sites, self.max_queue)
        with self._lock:
            if self._closed:
                raise HubFull("this worker is shutting down")
            if len(self._subs) >= self.max_subscribers:
                raise HubFull(f"{self.max_subscribers} live streams already open")
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, note: Note) -> int:
        """Hand ``note`` to every subscription that may see it; returns how many."""
        with self._lock:
            subs = [s for s in self._subs if s.wants(note)]
        for sub in subs:
            sub.offer(note)
        return len(subs)

    def resync_all(self) -> None:
        """Notes may have been missed (the listener reconnected): everyone re-reads."""
        self.publish(RESYNC)

    def close(self) -> None:
        """End every stream now and refuse new ones (the worker is shutting down).

        Safe from a signal handler: it only queues a note for each stream.
        """
        with self._lock:
            self._closed = True
        self.publish(CLOSING)
