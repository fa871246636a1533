"""The seam to the business rules (docs/cloud-internals.md).

Ingest calls ``smartlocker.cloud.reactions`` inside its transaction and hands
the returned effects to ``smartlocker.cloud.downlink`` after the commit. This
module is the one place that knows those names, so tests and the benchmark's
relay can pass their own :class:`Rules`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

import psycopg

from smartlocker.cloud import downlink, reactions
from smartlocker.cloud.downlink import Publisher
from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.rules.clock import ClockPolicy
from smartlocker.protocol import Ack, Event, Reported, Status, Telemetry

#: Called in the writer thread after a commit, with the connection and the effects.
Deliver = Callable[[psycopg.Connection[Any], list[Any]], None]

__all__ = ["Deliver", "NoRules", "Rules", "downlink_factory", "known_cabinets", "load_rules"]

logger = logging.getLogger(__name__)


class Rules(Protocol):
    """What ingest needs from ``smartlocker.cloud.reactions``."""

    def on_events(
        self, conn: psycopg.Connection[Any], events: Sequence[Event], now: datetime
    ) -> Any: ...
    def on_ack(self, conn: psycopg.Connection[Any], ack: Ack, now: datetime) -> Any: ...
    def on_lane_acks(
        self, conn: psycopg.Connection[Any], acks: Sequence[Ack], now: datetime
    ) -> Any: ...
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
    def on_tick(self, conn: psycopg.Connection[Any], now: datetime) -> Any: ...


class NoRules:
    """Rules that react to nothing (the benchmark's storage-only mode)."""

    def on_events(
        self, conn: psycopg.Connection[Any], events: Sequence[Event], now: datetime
    ) -> Any:
        return None

    def on_ack(self, conn: psycopg.Connection[Any], ack: Ack, now: datetime) -> Any:
        return None

    def on_lane_acks(
        self, conn: psycopg.Connection[Any], acks: Sequence[Ack], now: datetime
    ) -> Any:
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

    def on_tick(self, conn: psycopg.Connection[Any], now: datetime) -> Any:
        return None


def load_rules(keys: CloudKeys, *, clock: ClockPolicy | None = None) -> Rules:
    """The real rules (``smartlocker.cloud.reactions``), signing with ``keys``."""
    return reactions.configure(keys, clock=clock)


def downlink_factory(keys: CloudKeys) -> Callable[[Publisher], Deliver]:
    """After each commit: republish the desired states the effects name (signed)."""

    def factory(publisher: Publisher) -> Deliver:
        def deliver(conn: psycopg.Connection[Any], effects: list[Any]) -> None:
            downlink.publish_effects(conn, publisher, keys.signing_key, effects)

        return deliver

    return factory


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
