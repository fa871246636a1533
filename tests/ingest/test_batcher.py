"""The batcher: an urgent item (an ack) skips the batching delay, however it arrives."""

from __future__ import annotations

import asyncio

import pytest

from smartlocker.cloud.ingest.batcher import Batcher


@pytest.mark.parametrize("how", ["add", "extend"])
def test_an_urgent_item_goes_at_once_or_when_the_writer_is_free(how: str) -> None:
    async def scenario() -> list[list[str]]:
        flushed: list[list[str]] = []
        busy = [False]
        batcher: Batcher[str] = Batcher(flushed.append, max_delay=60.0, busy=lambda: busy[0])

        def put(items: list[str], urgent: bool) -> None:
            if how == "add":
                for item in items:
                    batcher.add(item, urgent=urgent)
            else:
                batcher.extend(items, urgent=urgent)

        put(["event"], False)
        assert flushed == []  # an ordinary item waits for the delay (60 s here)
        put(["ack-1"], True)
        assert flushed == [["event", "ack-1"]]  # the writer is idle: at once
        busy[0] = True
        put(["ack-2"], True)
        assert len(flushed) == 1  # the writer is busy: it keeps filling
        busy[0] = False
        batcher.writer_idle()
        assert flushed[-1] == ["ack-2"]  # and goes the moment the writer is free
        batcher.writer_idle()
        assert len(flushed) == 2
        return flushed

    asyncio.run(scenario())
