"""Several writers in one process, each on its own share of the cabinets.

One writer is one thread and one database connection: while PostgreSQL works
on a batch (COPY, cursors, commit and its fsync), that writer waits. Two or more
writers, each with its own connection and the cabinets whose id hashes to it,
overlap that waiting with each other's work and with the event loop's. A
cabinet always goes to the same writer, so writers never wait for each other's
cursor rows, and each keeps its remembered cursors (:mod:`.cursors`) current.
Only the first one sweeps presence and runs the rules' ticks.

Acknowledgements still go out in the order the messages came: a batch is handed
back (its PUBACKs, its receipts) once all its parts and all earlier batches have
committed. Mosquitto looks up each PUBACK by walking its list of messages in
flight from the oldest, so acknowledging out of order costs the broker a walk
over thousands of messages per PUBACK (out of order, we saw its CPU per event
roughly double).
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from smartlocker.protocol import ProtocolError

from .intake import Inbound, TopicCache
from .worker import Sink
from .writer import Outcome

__all__ = ["ShardedSink", "shard_names"]

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    items: list[Inbound]
    parts: int
    merged: Outcome = field(default_factory=lambda: Outcome(items=[]))


class ShardedSink:
    """A worker's sink that splits each batch among writers by cabinet.

    ``make_writers`` builds the writers from the callback they must call with
    each committed part; ``on_committed`` gets whole batches, in order.
    """

    def __init__(
        self,
        make_writers: Callable[[Callable[[Outcome], None]], Sequence[Sink]],
        topics: TopicCache,
        on_committed: Callable[[Outcome], None],
    ) -> None:
        self._writers = list(make_writers(self._part_committed))
        if not self._writers:
            raise ValueError("at least one writer")
        self._topics = topics
        self._on_committed = on_committed
        self._shard_of: dict[str, int] = {}
        self._lock = threading.Lock()
        self._submitted = 0
        self._released = 0
        self._pending: dict[int, _Pending] = {}
        #: id of a part's list → (the part, its batch's number).
        self._part_of: dict[int, tuple[list[Inbound], int]] = {}

    def _shard(self, topic: str) -> int:
        shard = self._shard_of.get(topic)
        if shard is None:
            try:
                cabinet, _ = self._topics.parse(topic)
            except ProtocolError:
                shard = 0  # it becomes a dead letter: any writer will do
            else:
                shard = zlib.crc32(cabinet.encode()) % len(self._writers)
            if len(self._shard_of) > 200_000:
                self._shard_of.clear()
            self._shard_of[topic] = shard
        return shard

    def start(self) -> None:
        for w in self._writers:
            w.start()

    def submit(self, batch: list[Inbound]) -> None:
        parts: list[list[Inbound]] = [[] for _ in self._writers]
        shard_of = self._shard_of
        for item in batch:
            shard = shard_of.get(item.topic)
            if shard is None:
                shard = self._shard(item.topic)
            parts[shard].append(item)
        used = [(w, part) for w, part in zip(self._writers, parts, strict=True) if part]
        with self._lock:
            self._submitted += 1
            number = self._submitted
            self._pending[number] = _Pending(batch, len(used))
            for _, part in used:
                self._part_of[id(part)] = (part, number)
        for writer, part in used:
            writer.submit(part)

    def _part_committed(self, outcome: Outcome) -> None:
        """From a writer's thread: one part is in; hand back what is complete, in order."""
        with self._lock:
            _, number = self._part_of.pop(id(outcome.items))
            pending = self._pending[number]
            merged = pending.merged
            merged.receipts.update(outcome.receipts)
            merged.new_events += outcome.new_events
            merged.duplicates += outcome.duplicates
            merged.dead += outcome.dead
            merged.committed_at = max(merged.committed_at, outcome.committed_at)
            pending.parts -= 1
            while (done := self._pending.get(self._released + 1)) is not None and not done.parts:
                self._released += 1
                del self._pending[self._released]
                done.merged.items = done.items
                self._on_committed(done.merged)

    @property
    def backlog(self) -> int:
        return sum(w.backlog for w in self._writers)

    def stop(self, timeout: float = 10.0) -> None:
        for w in self._writers:
            w.stop(timeout)


def shard_names(count: int) -> Callable[[int], str]:
    """Thread names: ``ingest-writer`` alone, else ``ingest-writer-N``."""
    return lambda i: "ingest-writer" if count == 1 else f"ingest-writer-{i}"
