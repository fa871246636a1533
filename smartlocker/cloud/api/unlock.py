"""Opening a compartment through the API: command, audit, publish, optionally wait.

The command row and its audit entry commit together (cloud-core's
:func:`~smartlocker.cloud.downlink.create_unlock_command`); then
:func:`~smartlocker.cloud.downlink.send_command` signs and publishes it. With
``wait`` the request sleeps on the process's LISTEN thread until the command is
final (the ack was ingested, in whichever process) or the wait is over.
"""

from __future__ import annotations

import logging
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
from .publisher import PublishError
from .ratelimit import hit

__all__ = ["FINAL", "command_model", "open_compartment"]

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
    hit(
        conn,
        f"unlock:{principal.key_id}",
        limit=s.settings.unlocks_per_minute,
        window=timedelta(minutes=1),
        now=now,
    )
    with conn.transaction():
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
    try:
        send_command(conn, publisher, keys.signing_key, row.id, now=now, topics=s.topics)
    except (PublishError, OSError) as exc:
        logger.error("command %s not published: %s", row.id, exc)
        s.metrics.commands.labels("unpublished").inc()
        raise ServiceUnavailable(
            f"the broker did not take command {row.id}; it will time out unsent",
            slug="mqtt-unavailable",
        ) from exc
    if wait:

        def final() -> CommandRow | None:
            current = get_command(conn, row.id)
            return current if current.status in FINAL else None

        done = s.waiter.wait(row.id, final, wait)
        if done is not None:
            s.metrics.commands.labels(done.status.value).inc()
            return command_model(done), 200
    return command_model(get_command(conn, row.id)), 202
