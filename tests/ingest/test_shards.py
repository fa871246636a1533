"""Batches split among writers by cabinet: each message once, a cabinet always to one writer."""

from __future__ import annotations

from datetime import UTC, datetime

from smartlocker.cloud.ingest.intake import Inbound, TopicCache
from smartlocker.cloud.ingest.shards import ShardedSink
from smartlocker.protocol import TopicScheme


class Collect:
    def __init__(self) -> None:
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


def test_each_cabinet_goes_to_one_writer_and_every_message_somewhere() -> None:
    writers = [Collect(), Collect(), Collect()]
    sink = ShardedSink(writers, TopicCache(TopicScheme()))
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
