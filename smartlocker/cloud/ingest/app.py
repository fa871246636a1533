"""Wiring: worker + writer + rules + downlink in one process (``smartlocker cloud ingest``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psycopg

from smartlocker.protocol import TopicScheme

from .acklane import AckLane
from .intake import TopicCache
from .metrics import IngestMetrics
from .seam import Deliver, Rules
from .shards import ShardedSink, shard_names
from .worker import GmqttPublisher, IngestSettings, IngestWorker, Sink
from .writer import Outcome, Writer, WriterSettings

__all__ = ["run_ingest", "serve"]

logger = logging.getLogger(__name__)

#: Builds the post-commit downlink from the worker's thread-safe publisher.
DeliverFactory = Callable[[GmqttPublisher], Deliver]


async def serve(
    settings: IngestSettings,
    writer_settings: WriterSettings,
    rules: Rules,
    stop: asyncio.Event,
    *,
    deliver_factory: DeliverFactory | None = None,
    metrics: IngestMetrics | None = None,
    started: Callable[[IngestWorker], None] | None = None,
) -> None:
    """Run one ingest worker until ``stop`` is set."""
    metrics = metrics or IngestMetrics()
    loop = asyncio.get_running_loop()
    holder: dict[str, Deliver] = {}

    def deliver(conn: psycopg.Connection[Any], effects: list[Any]) -> None:
        if "d" in holder:
            holder["d"](conn, effects)

    count = max(1, writer_settings.writers)
    name = shard_names(count)

    def make_writers(callback: Callable[[Outcome], None]) -> list[Writer]:
        return [
            Writer(
                replace(writer_settings, sweeps=i == 0),
                rules,
                TopicCache(TopicScheme(settings.prefix)),
                callback,
                deliver=deliver if deliver_factory is not None else None,
                metrics=metrics,
                name=name(i),
            )
            for i in range(count)
        ]

    def make_writer(callback: Callable[[Outcome], None]) -> Sink:
        if count == 1:
            return make_writers(callback)[0]
        return ShardedSink(make_writers, TopicCache(TopicScheme(settings.prefix)), callback)

    def make_ack_lane(callback: Callable[[Outcome], None]) -> Sink:
        return AckLane(
            replace(writer_settings, sweeps=False),
            rules,
            TopicCache(TopicScheme(settings.prefix)),
            callback,
            deliver=deliver if deliver_factory is not None else None,
            metrics=metrics,
            name="ingest-acks",
        )

    worker = IngestWorker(
        settings,
        make_writer,
        metrics=metrics,
        ack_lane_factory=make_ack_lane if writer_settings.ack_lane else None,
    )
    if deliver_factory is not None:
        holder["d"] = deliver_factory(GmqttPublisher(worker, loop))
    if started is not None:
        started(worker)
    await worker.run(stop)


def run_ingest(
    settings: IngestSettings,
    writer_settings: WriterSettings,
    rules: Rules,
    *,
    deliver_factory: DeliverFactory | None = None,
    metrics_port: int | None = None,
) -> None:
    """Blocking entry point: SIGTERM/SIGINT stop the worker in order."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        metrics = IngestMetrics()
        if metrics_port is not None:
            metrics.serve(metrics_port)
            logger.info("metrics on http://127.0.0.1:%d/metrics", metrics_port)
        await serve(
            settings,
            writer_settings,
            rules,
            stop,
            deliver_factory=deliver_factory,
            metrics=metrics,
        )

    asyncio.run(main())
