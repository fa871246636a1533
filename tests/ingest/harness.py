"""Helpers for the ingest tests: an in-process worker, a cabinet that publishes events."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from smartlocker.cloud.ingest import IngestSettings, IngestWorker, WriterSettings
from smartlocker.cloud.ingest.app import serve
from smartlocker.cloud.ingest.seam import NoRules, Rules
from smartlocker.protocol import BootEvent, DoorOpened, TopicScheme, encode

SCHEME = TopicScheme()
T0 = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


def event(cabinet: str, seq: int, *, boot: bool = False, ts: datetime | None = None) -> bytes:
    """The wire form of one event with a deterministic ts (so resends are identical)."""
    at = ts or T0 + timedelta(milliseconds=seq)
    if boot:
        return encode(BootEvent(cabinet=cabinet, seq=seq, ts=at, agent_version="1.0"))
    return encode(
        DoorOpened(cabinet=cabinet, seq=seq, ts=at, compartment="c1", granted=seq % 2 == 0)
    )


def topic(cabinet: str, channel: str) -> str:
    return str(SCHEME.topic(cabinet, channel))


@dataclass
class InProcessIngest:
    """An ingest worker on its own event loop thread (start/stop from the test)."""

    mqtt_url: str
    database_url: str
    rules: Rules = field(default_factory=NoRules)
    client_id: str = field(default_factory=lambda: f"ingest-test-{uuid.uuid4().hex[:8]}")
    #: Tests share a broker: a group of their own keeps other tests' sessions out.
    share_group: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")
    batch_delay: float = 0.01
    receipt_interval: float = 0.02
    writer_kw: dict[str, Any] = field(default_factory=dict)
    deliver_factory: Any = None

    def __post_init__(self) -> None:
        self.worker: IngestWorker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> InProcessIngest:
        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def started(worker: IngestWorker) -> None:
                self.worker = worker
                ready.set()

            await serve(
                IngestSettings(
                    mqtt_url=self.mqtt_url,
                    client_id=self.client_id,
                    share_group=self.share_group,
                    batch_delay=self.batch_delay,
                    receipt_interval=self.receipt_interval,
                    reconnect_delay=0.2,
                ),
                WriterSettings(self.database_url, retry_delay=0.1, **self.writer_kw),
                self.rules,
                self._stop,
                deliver_factory=self.deliver_factory,
                started=started,
            )

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # surfaced by stop()
                self.error = exc
                ready.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(timeout)
        wait_for(lambda: self.worker is not None and self.worker.connected.is_set(), timeout)
        time.sleep(0.1)  # SUBACK
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(20)
            assert not self._thread.is_alive(), "ingest did not stop"
        if self.error is not None:
            raise self.error

    def __enter__(self) -> InProcessIngest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def provision(url: str, cabinets: Iterable[str], *, site: str = "site-t") -> None:
    """Migrate, and provision ``cabinets`` (one compartment ``c1`` each) the rules' way."""
    from smartlocker.cloud.db import migrate
    from smartlocker.cloud.rules.fleet import CompartmentSpec, create_cabinet, create_site

    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM sites WHERE id = %s", (site,)).fetchone() is None:
            create_site(conn, site, "Test site")
        for cabinet in cabinets:
            create_cabinet(conn, cabinet, site, [CompartmentSpec(id="c1", size="m")])


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def query(url: str, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, tuple(params)).fetchall()


def count(url: str, sql: str, params: Iterable[Any] = ()) -> int:
    rows = query(url, sql, params)
    return int(rows[0][0])


def receipts_of(messages: Iterable[Any]) -> dict[str, int]:
    """Highest receipt per cabinet among received paho messages."""
    best: dict[str, int] = {}
    for msg in messages:
        data = json.loads(msg.payload)
        best[data["cabinet"]] = max(best.get(data["cabinet"], 0), data["upto_seq"])
    return best
