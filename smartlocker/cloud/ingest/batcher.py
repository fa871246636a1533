"""Collect messages into batches: up to ``max_messages``, or ``max_delay`` seconds.

Runs on the event loop; a full or timed-out batch goes to ``flush`` (the writer's
queue). While the writer works on one batch the next one fills, so batches grow
with the load and the per-transaction cost is shared by more rows.

An *urgent* item (a command's ack: an API request may be waiting for it) does not
wait for ``max_delay``: its batch goes at once if the writer is idle, else as soon
as the writer says it is (:meth:`Batcher.writer_idle`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Batcher"]

T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(
        self,
        flush: Callable[[list[T]], None],
        *,
        max_messages: int = 5000,
        max_delay: float = 0.02,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        if max_messages < 1 or max_delay <= 0:
            raise ValueError("max_messages must be >= 1 and max_delay > 0")
        self._flush = flush
        self.max_messages = max_messages
        self.max_delay = max_delay
        self._busy = busy
        self._items: list[T] = []
        self._timer: asyncio.TimerHandle | None = None
        self._urgent = False

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, *, urgent: bool = False) -> None:
        self.extend([item], urgent=urgent)

    def writer_idle(self) -> None:
        """The writer finished a batch: an urgent item waiting goes now."""
        if self._urgent and self._items and not self._busy():
            self.flush()

    def extend(self, new: list[T], *, urgent: bool = False) -> None:
        """Add several items at once (one read from the socket); ``urgent`` as for :meth:`add`."""
        items = self._items
        items.extend(new)
        while len(items) >= self.max_messages:
            full, rest = items[: self.max_messages], items[self.max_messages :]
            self._items = full
            self.flush()
            self._items = items = rest
        if not items:
            return
        if urgent and not self._busy():
            self.flush()
            return
        if urgent:
            self._urgent = True
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_delay, self._due)

    def _due(self) -> None:
        self._timer = None
        if self._items and self._busy():
            # The writer is still on the previous batch: keep filling this one.
            self._timer = asyncio.get_running_loop().call_later(self.max_delay, self._due)
            return
        self.flush()

    def flush(self) -> None:
        self._urgent = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._items:
            items, self._items = self._items, []
            self._flush(items)
