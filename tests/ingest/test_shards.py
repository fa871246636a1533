"""Batches split among writers by cabinet, handed back whole and in order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from smartlocker.cloud.ingest.intake import Inbound, TopicCache
from smartlocker.cloud.ingest.shards import ShardedSink
from smartlocker.cloud.ingest.writer import Outcome
from smartlocker.protocol import TopicScheme


class Collect:
    def __init__(self, done: Callable[[Outcome], None]) -> None:
        self.done = done
        self.batches: list[list[Inbound]] = []
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def submit(self, batch: list[Inbound]) -> None:
        self.batches.append(batch)

    @property
    def backlog(self) -> int:
        return len(self.batches)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped = True

    def commit(self, i: int) -> None:
        part = self.batches[i]
        self.done(Outcome(items=part, receipts={part[0].topic: i}, new_events=len(part)))


def make(count: int) -> tuple[ShardedSink, list[Collect], list[Outcome]]:
    writers: list[Collect] = []
    released: list[Outcome] = []

    def make_writers(done: Callable[[Outcome], None]) -> list[Collect]:
        writers.extend(Collect(done) for _ in range(count))
        return writers

    return ShardedSink(make_writers, TopicCache(TopicScheme()), released.append), writers, released


def test_each_cabinet_goes_to_one_writer_and_every_message_somewhere() -> None:
    sink, writers, _ = make(3)
    sink.start()
    now = datetime.now(UTC)
    topics = [f"lockers/cab-{i % 40}/events" for i in range(400)] + ["nonsense/topic", "x"]
    batch = [Inbound(t, b"%d" % i, now) for i, t in enumerate(topics)]
    sink.submit(batch[:200])
    sink.submit(batch[200:])
    got = [item for w in writers for b in w.batches for item in b]
    assert sorted(id(i) for i in got) == sorted(id(i) for i in batch)
    owner: dict[str, int] = {}
    for n, w in enumerate(writers):
        for b in w.batches:
            assert b, "no empty batch is handed over"
            for item in b:
                assert owner.setdefault(item.topic, n) == n
    assert {owner["nonsense/topic"], owner["x"]} == {0}
    assert len({owner[f"lockers/cab-{i}/events"] for i in range(40)}) == 3  # all used
    assert sink.backlog == sum(len(w.batches) for w in writers)
    sink.stop()
    assert all(w.started and w.stopped for w in writers)


def test_batches_come_back_whole_and_in_the_order_they_came() -> None:
    sink, (a, b), released = make(2)
    now = datetime.now(UTC)
    first = [Inbound(f"lockers/cab-{i}/events", b"", now) for i in range(20)]
    second = [Inbound(f"lockers/cab-{i}/events", b"", now) for i in range(20, 40)]
    sink.submit(first)
    sink.submit(second)
    assert len(a.batches) == len(b.batches) == 2
    a.commit(1)  # the second batch's part first
    b.commit(1)
    assert released == [], "the second batch waits for the first"
    a.commit(0)
    assert released == []
    b.commit(0)
    assert [o.items for o in released] == [first, second]  # whole, in arrival order
    assert released[0].new_events == 20
    assert len(released[1].receipts) == 2
