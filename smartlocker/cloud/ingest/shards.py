"""Several writers in one process, each on its own share of the cabinets.

One writer is one thread and one database connection: while PostgreSQL works
on a batch (COPY, cursors, commit and its fsync), that writer waits. Two or more
writers, each with its own connection and the cabinets whose id hashes to it,
overlap that waiting with each other's work and with the event loop's. A
cabinet always goes to the same writer, so writers never wait for each other's
cursor rows, and each keeps its remembered cursors (:mod:`.cursors`) current.
Only the first one sweeps presence and runs the rules' ticks.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence

from smartlocker.protocol import ProtocolError

from .intake import Inbound, TopicCache
from .worker import Sink

__all__ = ["ShardedSink", "shard_names"]

logger = logging.getLogger(__name__)


class ShardedSink:
    """A worker's sink that splits each batch among ``writers`` by cabinet."""

    def __init__(self, writers: Sequence[Sink], topics: TopicCache) -> None:
        if not writers:
            raise ValueError("at least one writer")
        self._writers = list(writers)
        self._topics = topics
        self._shard_of: dict[str, int] = {}

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
        for writer, part in zip(self._writers, parts, strict=True):
            if part:
                writer.submit(part)

    @property
    def backlog(self) -> int:
        return sum(w.backlog for w in self._writers)

    def stop(self, timeout: float = 10.0) -> None:
        for w in self._writers:
            w.stop(timeout)


def shard_names(count: int) -> Callable[[int], str]:
    """Thread names: ``ingest-writer`` alone, else ``ingest-writer-N``."""
    return lambda i: "ingest-writer" if count == 1 else f"ingest-writer-{i}"
