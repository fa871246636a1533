"""Opening a compartment through the API: command, audit, publish, optionally wait.

The command row and its audit entry commit together (cloud-core's
:func:`~smartlocker.cloud.downlink.create_unlock_command`); then
:func:`~smartlocker.cloud.downlink.send_command` signs and publishes it. With
``wait`` the request sleeps on the process's LISTEN thread until the command is
final (the ack was ingested, in whichever process) or the wait is over.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg

from smartlocker.cloud.downlink import create_unlock_command, send_command
from smartlocker.cloud.rules.commands import CommandRow, CommandStatus, get_command
from smartlocker.cloud.rules.fleet import audit

from .app import state
from .auth import Principal
from .errors import ServiceUnavailable
from .models import Command
from .publisher import MqttPublishError
from .ratelimit import hit

__all__ = ["FINAL", "command_model", "open_compartment"]

#: Advisory-lock class of "publishing a command to a cabinet" (the key is the cabinet).
_PUBLISH_LOCK = 0x5A4C0002

logger = logging.getLogger(__name__)

FINAL = frozenset(
    {
        CommandStatus.SUCCEEDED,
        CommandStatus.FAILED,
        CommandStatus.REJECTED,
        CommandStatus.TIMED_OUT,
    }
)


def command_model(row: CommandRow) -> Command:
    return Command(
        id=row.id,
        cabinet=row.cabinet,
        compartment=row.compartment,
        purpose=row.purpose,
        parcel=row.parcel,
        reason=row.reason,
        actor=row.actor,
        status=row.status.value,
        outcome=row.outcome,
        outcome_reason=row.outcome_reason,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


def open_compartment(
    conn: psycopg.Connection[Any],
    principal: Principal,
    cabinet: str,
    compartment: str,
    *,
    purpose: str,
    reason: str | None,
    parcel: str | None = None,
    wait: float | None = None,
) -> tuple[Command, int]:
    """Create, audit, send (and maybe await) an unlock; ``(command, 200 | 202)``."""
    s = state()
    keys = s.require_keys()
    publisher = s.require_publisher()
    now = s.clock()
    with ExitStack() as stack:
        # Listen before publishing: the ack's NOTIFY cannot come before we wait for it.
        watch = stack.enter_context(s.waiter.watch_later()) if wait else None
        # One command at a time per cabinet, from its counter to its publication: the
        # cabinet refuses a counter at or below the highest it has seen, so commands
        # must reach it in counter order, whichever worker or thread made them.
        conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_PUBLISH_LOCK, cabinet))
        try:
            with conn.transaction():
                hit(
                    conn,
                    f"unlock:{principal.key_id}",
                    limit=s.settings.unlocks_per_minute,
                    window=timedelta(minutes=1),
                    now=now,
                    own_transaction=False,
                )
                row = create_unlock_command(
                    conn,
                    cabinet,
                    compartment,
                    reason,
                    principal.actor,
                    now=now,
                    parcel=parcel,
                    purpose=purpose,
                )
                audit(
                    conn,
                    actor=principal.actor,
                    action=f"compartment.unlock.{purpose}",
                    target_kind="compartment",
                    target=f"{cabinet}/{compartment}",
                    now=now,
                    detail={"command": row.id, "reason": reason, "parcel": parcel},
                )
            if watch is not None:
                watch.listen(row.id)
            try:
                send_command(conn, publisher, keys.signing_key, row.id, now=now, topics=s.topics)
            except MqttPublishError as exc:
                logger.error("command %s not published: %s", row.id, exc)
                s.metrics.commands.labels("unpublished").inc()
                raise ServiceUnavailable(
                    f"the broker did not take command {row.id}; it times out unsent ({exc})",
                    slug="mqtt-unavailable",
                ) from exc
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_PUBLISH_LOCK, cabinet))

        if watch is not None and wait:

            def final() -> CommandRow | None:
                current = get_command(conn, row.id)
                return current if current.status in FINAL else None

            done = watch.wait(final, min(wait, s.settings.max_wait_seconds))
            if done is not None:
                s.metrics.commands.labels(done.status.value).inc()
                return command_model(done), 200
            return command_model(get_command(conn, row.id)), 202
    # Published: "sent", unless the ack overtook this line (then it says so next time).
    return command_model(replace(row, status=CommandStatus.SENT)), 202
