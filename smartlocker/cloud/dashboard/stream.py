"""Server-sent events for the dashboard: the wire format and one stream's loop.

A stream sends ``hello`` (who the key is), then one event per note its key may
see (event name = the note's kind, data = the note as JSON), a comment line as a
heartbeat when nothing happened for ``heartbeat`` seconds (which also finds out
that a client went away: the write fails and the generator is closed), and ends
with ``bye`` after ``lifetime`` seconds so a thread is never held for good (or at
once when the worker shuts down: :meth:`Hub.close`); the page reconnects.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from .hub import CLOSING, Hub, Subscription

__all__ = ["format_event", "run_stream"]

logger = logging.getLogger(__name__)


def format_event(event: str, data: str) -> bytes:
    """One SSE event; ``data`` is one line of JSON (newlines split into data lines)."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n".encode()


def run_stream(
    hub: Hub,
    sub: Subscription,
    hello: dict[str, Any],
    *,
    heartbeat: float = 15.0,
    lifetime: float = 600.0,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[bytes]:
    """The bytes of one stream; unsubscribes however it ends."""
    try:
        yield b"retry: 2000\n\n" + format_event("hello", json.dumps(hello))
        deadline = clock() + lifetime
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                break
            note = sub.get(timeout=min(heartbeat, remaining))
            if note is None:
                yield b": ping\n\n"
                continue
            if note is CLOSING:
                break
            yield format_event(note.kind, note.to_json())
        yield format_event("bye", "{}")
    finally:
        hub.unsubscribe(sub)
        if sub.dropped:
            logger.info("live stream closed; %d notes were dropped for a slow reader", sub.dropped)
