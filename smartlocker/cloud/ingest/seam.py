"""The seam to the business rules (docs/cloud-internals.md).

Ingest calls ``smartlocker.cloud.reactions`` inside its transaction and hands
the returned effects to ``smartlocker.cloud.downlink`` after the commit. This
module is the one place that knows those names, so tests and the benchmark's
relay can pass their own :class:`Rules`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

import psycopg

from smartlocker.protocol import Ack, Event, Reported, Status, Telemetry

__all__ = ["NoRules", "Rules", "known_cabinets", "load_rules"]

logger = logging.getLogger(__name__)


class Rules(Protocol):
    """What ingest needs from ``smartlocker.cloud.reactions``."""

    def on_events(
        self, conn: psycopg.Connection[Any], events: Sequence[Event], now: datetime
    ) -> Any: ...
    def on_ack(self, conn: psycopg.Connection[Any], ack: Ack, now: datetime) -> Any: ...
    def on_status(self, conn: psycopg.Connection[Any], status: Status, now: datetime) -> Any: ...
    def on_reported(
        self, conn: psycopg.Connection[Any], reported: Reported, now: datetime
    ) -> Any: ...
    def on_telemetry(
        self, conn: psycopg.Connection[Any], readings: Sequence[Telemetry], now: datetime
    ) -> Any: ...
    def on_silence(
        self, conn: psycopg.Connection[Any], cabinet: str, last_seen: datetime, now: datetime
    ) -> Any: ...


class NoRules:
    """Rules that react to nothing (the benchmark's storage-only mode)."""

    def on_events(
        self, conn: psycopg.Connection[Any], events: Sequence[Event], now: datetime
    ) -> Any:
        return None

    def on_ack(self, conn: psycopg.Connection[Any], ack: Ack, now: datetime) -> Any:
        return None

    def on_status(self, conn: psycopg.Connection[Any], status: Status, now: datetime) -> Any:
        return None

    def on_reported(self, conn: psycopg.Connection[Any], reported: Reported, now: datetime) -> Any:
        return None

    def on_telemetry(
        self, conn: psycopg.Connection[Any], readings: Sequence[Telemetry], now: datetime
    ) -> Any:
        return None

    def on_silence(
        self, conn: psycopg.Connection[Any], cabinet: str, last_seen: datetime, now: datetime
    ) -> Any:
        return None


def load_rules() -> Rules:
    """The real rules, ``smartlocker.cloud.reactions`` (the module is the object)."""
    module: Any = importlib.import_module("smartlocker.cloud.reactions")
    return module  # type: ignore[no-any-return]


def known_cabinets(conn: psycopg.Connection[Any], names: Iterable[str]) -> set[str]:
    """Which of ``names`` are provisioned cabinets (others are dead-lettered)."""
    wanted = sorted(set(names))
    if not wanted:
        return set()
    exists = conn.execute("SELECT to_regclass('cabinets') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return set(wanted)  # before the rules' schema exists nothing can be checked
    rows = conn.execute("SELECT id FROM cabinets WHERE id = ANY(%s::text[])", (wanted,)).fetchall()
    return {r[0] for r in rows}
