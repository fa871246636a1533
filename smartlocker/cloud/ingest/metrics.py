"""Prometheus metrics of one ingest worker (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["IngestMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 5, 10)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter("smartlocker_ingest_messages", "MQTT messages received", registry=r)
        self.batches = Counter("smartlocker_ingest_batches", "Batches committed", registry=r)
        self.batch_size = Histogram(
            "smartlocker_ingest_batch_size",
            "Messages per committed batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "smartlocker_ingest_commit_seconds",
            "Time to write and commit one batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.publish_to_commit = Histogram(
            "smartlocker_ingest_publish_to_commit_seconds",
            "Event ts to commit (1 in 8 events sampled)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.events_new = Counter(
            "smartlocker_ingest_events_new", "Events stored (new)", registry=r
        )
        self.events_duplicate = Counter(
            "smartlocker_ingest_events_duplicate", "Events already stored (redelivery)", registry=r
        )
        self.dead_letters = Counter(
            "smartlocker_ingest_dead_letters", "Messages refused", ["reason"], registry=r
        )
        self.db_errors = Counter(
            "smartlocker_ingest_db_errors", "Failed batch attempts", registry=r
        )
        self.receipts = Counter("smartlocker_ingest_receipts", "Receipts published", registry=r)
        self.connected = Gauge(
            "smartlocker_ingest_broker_connected", "1 while connected to the broker", registry=r
        )
        self.unacked = Gauge(
            "smartlocker_ingest_unacked", "Messages received but not yet committed", registry=r
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` over HTTP on ``addr:port`` (a daemon thread)."""
        start_http_server(port, addr=addr, registry=self.registry)
