"""Prometheus metrics of the API.

One process: the metrics live in the app's own registry. Under gunicorn with several
workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before start (the
``smartlocker cloud api`` command does so): every worker writes its samples there and
``/metrics`` aggregates all workers (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        # In multiprocess mode the values go to files; nothing is registered in-process.
        reg = None if self.multiprocess else self.registry
        self.requests = Counter(
            "smartlocker_api_requests",
            "HTTP requests answered, by endpoint and status.",
            ["method", "endpoint", "status"],
            registry=reg,
        )
        self.latency = Histogram(
            "smartlocker_api_request_seconds",
            "Time to answer a request, by endpoint.",
            ["method", "endpoint"],
            registry=reg,
            buckets=_LATENCY_BUCKETS,
        )
        self.commands = Counter(
            "smartlocker_api_commands",
            "Remote unlock commands by final state seen by the API.",
            ["state"],
            registry=reg,
        )

    def render(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
