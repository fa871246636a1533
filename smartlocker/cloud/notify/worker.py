"""The notification worker: claims due outbound messages, sends them, settles them.

Several workers may run at once (leases with ``SKIP LOCKED``); each message is
sent by one worker at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import psycopg

from .channels import Channel, DeliveryError, Outbound
from .outbox import RetryPolicy, claim_due, mark_failed, mark_sent

__all__ = ["NotificationWorker"]

logger = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class NotificationWorker:
    """Drains the outbox through the configured channels until stopped."""

    def __init__(
        self,
        database_url: str,
        channels: Mapping[str, Channel],
        *,
        policy: RetryPolicy | None = None,
        lease_s: float = 60.0,
        poll_s: float = 1.0,
        batch: int = 20,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.database_url = database_url
        self.channels = dict(channels)
        self.policy = policy or RetryPolicy()
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.batch = batch
        self.clock = clock
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Loop until :meth:`stop`; survives database outages by reconnecting."""
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True) as conn:
                    while not self._stop.is_set():
                        if self.run_once(conn) == 0:
                            self._stop.wait(self.poll_s)
            except psycopg.OperationalError as exc:
                logger.warning("notification worker lost the database: %s", exc)
                self._stop.wait(self.poll_s)

    def run_once(self, conn: psycopg.Connection[object]) -> int:
        """Claim one batch and settle every message in it; returns how many."""
        with conn.transaction():
            claimed = claim_due(conn, self.clock(), lease_s=self.lease_s, limit=self.batch)
        for message in claimed:
            self._deliver(conn, message)
        return len(claimed)

    def _deliver(self, conn: psycopg.Connection[object], message: Outbound) -> None:
        channel = self.channels.get(message.channel)
        started = time.monotonic()
        try:
            if channel is None:
                raise DeliveryError(
                    f"channel {message.channel!r} is not configured", permanent=True
                )
            status = channel.send(message, self.clock().timestamp())
        except DeliveryError as exc:
            with conn.transaction():
                outcome = mark_failed(
                    conn,
                    message,
                    self.clock(),
                    exc.reason,
                    permanent=exc.permanent,
                    policy=self.policy,
                    status=exc.status,
                )
            log = logger.error if outcome == "dead" else logger.warning
            log(
                "message %s (%s to %s) attempt %s failed, now %s: %s",
                message.id,
                message.topic,
                message.channel,
                message.attempt,
                outcome,
                exc.reason,
            )
            return
        with conn.transaction():
            mark_sent(conn, message.id, self.clock(), status)
        logger.info(
            "message %s (%s via %s) sent in %.0f ms",
            message.id,
            message.topic,
            message.channel,
            (time.monotonic() - started) * 1000,
        )
