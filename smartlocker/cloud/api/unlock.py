"""Opening a compartment through the API: command, audit, publish, optionally wait.

The command row (:func:`~smartlocker.cloud.rules.commands.create_ctes`), its audit
entry and the rate-limit count commit together, in one statement and one round trip; then
:func:`~smartlocker.cloud.downlink.publish_command` signs and publishes it. With
``wait`` the request sleeps on the process's LISTEN thread until the command is
final (the ack was ingested, in whichever process) or the wait is over.

Nothing orders a cabinet's commands between their commits and the cabinet: concurrent
requests (threads, gunicorn workers) may publish counters 8 then 7. The cabinet accepts
each counter once within its replay window (:class:`smartlocker.protocol.ReplayWindow`),
so they need not arrive in counter order.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from contextlib import ExitStack
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import psycopg

from smartlocker.cloud.downlink import publish_command
from smartlocker.cloud.rules.commands import (
    CommandRow,
    CommandStatus,
    command_row,
    create_ctes,
    create_params,
    get_command,
    mark_sent,
    missing_compartment,
)
from smartlocker.cloud.rules.fleet import audit_insert_from, audit_params
from smartlocker.protocol import new_message_id

from .app import state
from .auth import Principal
from .errors import ServiceUnavailable
from .models import Command
from .publisher import MqttPublishError
from .ratelimit import (
    GATE_STATEMENT,
    RATE_LIMITED,
    PendingHit,
    count_params,
    count_statement,
    window_start,
)
from .scope import cabinet_site
from .waiter import Note

__all__ = ["FINAL", "command_model", "open_compartment", "send_open"]

#: The rate limit's window for a key's unlocks.
_WINDOW = timedelta(minutes=1)

#: An unlock's whole transaction in one statement, from the rules' own parts: the key's
#: rate-limit gate (``gate``: :data:`~.ratelimit.GATE_STATEMENT`), the command
#: (``created``: :func:`~smartlocker.cloud.rules.commands.create_ctes`, only if the gate
#: is open), its audit row and the key's count (each only if ``created`` has a row).
#: The count reads ``created`` first, so the key's one rate-limit row is locked only
#: after the command's cabinet counter (an unlock waiting for its cabinet's counter
#: does not hold up the key's others) and until the commit. Refusals, in this order,
#: without an error and leaving nothing (no count, no audit, no counter): the window
#: already full (``over``), then no compartment within the key's sites (no ``created``
#: row). Only a request that raced another past the limit, between the gate's read and
#: its own count, is refused by the count itself (``SL429``, an error that aborts the
#: statement). Its one row: the command's columns (NULL when none), the count, ``over``.
_OPEN = (
    f"WITH gate AS ({GATE_STATEMENT}),"  # noqa: S608 (the rules' constants)
    f" {create_ctes(only_if='NOT (SELECT over FROM gate)')},"
    f" audited AS ({audit_insert_from('created')}),"
    " counted AS ("
    + count_statement("SELECT %(bucket)s, %(window_start)s, 1 FROM created")
    + ") SELECT created.*, counted.hits, gate.over FROM gate"
    " LEFT JOIN created ON true LEFT JOIN counted ON true"
)

logger = logging.getLogger(__name__)

FINAL = frozenset(
    {
        CommandStatus.SUCCEEDED,
        CommandStatus.FAILED,
        CommandStatus.REJECTED,
        CommandStatus.TIMED_OUT,
    }
)
_FINAL_VALUES = frozenset(status.value for status in FINAL)


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
    """Create, audit, send (and maybe await) an unlock; ``(command, 200 | 202)``.

    One round trip to PostgreSQL before the publication and, unless the request waits,
    one after. Before: :data:`_OPEN` (audit row, command, rate-limit count: one
    statement, its own transaction); it refuses by itself, leaving nothing, past the
    rate limit or without a compartment within the key's sites. After the
    PUBACK, the ``sent`` mark unless the request waits (then the mark is made only if
    the wait ends without the outcome). The answer to ``?wait`` comes from the NOTIFY's
    payload (the outcome), without reading the row again.
    """
    s = state()
    keys = s.require_keys()
    publisher = s.require_publisher()
    now = s.clock()
    command_id = new_message_id()
    limit = s.settings.unlocks_per_minute
    pending = PendingHit(
        conn, f"unlock:{principal.key_id}", window_start(now, _WINDOW), _WINDOW, now
    )
    with ExitStack() as stack:
        # Listen before publishing: the ack's NOTIFY cannot come before we wait for it.
        watch = stack.enter_context(s.waiter.watch_later()) if wait else None
        try:
            opened = send_open(
                conn,
                command_id,
                cabinet,
                compartment,
                actor=principal.actor,
                sites=principal.sites,
                purpose=purpose,
                reason=reason,
                parcel=parcel,
                now=now,
                hit=pending,
                limit=limit,
            )
            values = opened.fetchone()
            assert values is not None  # the statement always has its one row
        except psycopg.Error as exc:
            # Failed, or raced past the limit: nothing of it stays (no count, no audit,
            # no counter).
            _rollback(conn)
            if exc.sqlstate == RATE_LIMITED:
                raise pending.exceeded(limit) from None
            raise
        except BaseException:
            _rollback(conn)
            raise
        *columns, hits, over = values
        if over:
            raise pending.exceeded(limit)
        if columns[0] is None:
            # Out of the key's sites, or no such cabinet: "no cabinet", as a scoped
            # lookup says; else the compartment is what is missing.
            cabinet_site(conn, principal, cabinet)
            raise missing_compartment(cabinet, compartment)
        row = command_row(tuple(columns))
        pending.read(int(hits))
        # After the commit, holding no row lock: its own little transaction.
        pending.forget_old_windows()
        if watch is not None:
            watch.listen(row.id)
        try:
            publish_command(publisher, keys.signing_key, row, now=s.clock(), topics=s.topics)
        except MqttPublishError as exc:
            logger.error("command %s not published: %s", row.id, exc)
            s.metrics.commands.labels("unpublished").inc()
            raise ServiceUnavailable(
                f"the broker did not take command {row.id}; it times out unsent ({exc})",
                slug="mqtt-unavailable",
            ) from exc
        # The broker has it (PUBACK).
        sent_at = s.clock()
        if watch is None:
            mark_sent(conn, row.id, now=sent_at)
        # Awaited: marked `sent` only if the wait ends without the outcome. The ack's
        # update would otherwise queue behind this row's `sent` commit (its disk flush)
        # on the answer's path; created → final is allowed.

        if watch is not None and wait:

            def final(note: Note) -> CommandRow | None:
                if note is not None and note.get("status") in _FINAL_VALUES:
                    return replace(
                        row,
                        status=CommandStatus(note["status"]),
                        outcome=note.get("outcome"),
                        outcome_reason=note.get("outcome_reason"),
                    )
                current = get_command(conn, row.id)
                return current if current.status in FINAL else None

            done = watch.wait(final, min(wait, s.settings.max_wait_seconds))
            if done is not None:
                s.metrics.commands.labels(done.status.value).inc()
                return command_model(done), 200
            mark_sent(conn, row.id, now=sent_at)
            return command_model(get_command(conn, row.id)), 202
    # Published: "sent", unless the ack overtook this line (then it says so next time).
    return command_model(replace(row, status=CommandStatus.SENT)), 202


def send_open(
    conn: psycopg.Connection[Any],
    command_id: str,
    cabinet: str,
    compartment: str,
    *,
    actor: str,
    sites: Collection[str] | None,
    purpose: str,
    reason: str | None,
    parcel: str | None,
    now: datetime,
    hit: PendingHit,
    limit: int,
) -> psycopg.Cursor[Any]:
    """Send :data:`_OPEN` (an unlock's whole transaction) without reading its row: the
    command's columns (NULL: refused), the count (``hit``'s bucket and window, refused
    past ``limit``), whether the window was already full. In a pipeline, or read at
    once."""
    return conn.execute(
        _OPEN,
        {
            **create_params(
                command_id,
                cabinet,
                compartment,
                reason=reason,
                actor=actor,
                now=now,
                parcel=parcel,
                purpose=purpose,
                sites=sites,
            ),
            **audit_params(
                actor=actor,
                action=f"compartment.unlock.{purpose}",
                target_kind="compartment",
                target=f"{cabinet}/{compartment}",
                now=now,
                detail={"command": command_id, "reason": reason, "parcel": parcel},
            ),
            **count_params(hit, limit),
        },
    )


def _rollback(conn: psycopg.Connection[Any]) -> None:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
