"""The command lifecycle: created → sent → succeeded | failed | rejected | timed_out.

:data:`COMMAND_TRANSITIONS` is the one table of allowed status changes. An ack
may overtake the ``sent`` mark (the API commits ``sent`` after publishing, ingest
may already have the ack) and may arrive after ``timed_out`` (the cabinet was
slow but did act: the real outcome wins). A final outcome never changes again,
so a duplicate ack is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import psycopg

from smartlocker.protocol import AckOutcome, new_message_id

from ..errors import NotFound

__all__ = [
    "COMMAND_TRANSITIONS",
    "COMMAND_TTL",
    "CommandRow",
    "CommandStatus",
    "PendingOutcome",
    "command_row",
    "create_command",
    "create_ctes",
    "create_params",
    "expire_commands",
    "get_command",
    "mark_sent",
    "missing_compartment",
    "outcome_status",
    "record_outcome",
    "send_outcome",
]

logger = logging.getLogger(__name__)

#: Commands are valid only briefly: a cabinet refuses them after ``expires``.
COMMAND_TTL = timedelta(seconds=30)


class CommandStatus(StrEnum):
    CREATED = "created"
    SENT = "sent"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"


C = CommandStatus
_FINAL_FROM_ACK = (C.SUCCEEDED, C.FAILED, C.REJECTED)
COMMAND_TRANSITIONS: frozenset[tuple[CommandStatus, CommandStatus]] = frozenset(
    {(C.CREATED, C.SENT), (C.CREATED, C.TIMED_OUT), (C.SENT, C.TIMED_OUT)}
    | {(src, dst) for src in (C.CREATED, C.SENT, C.TIMED_OUT) for dst in _FINAL_FROM_ACK}
)

_OUTCOME_STATUS = {
    AckOutcome.OPENED: C.SUCCEEDED,
    AckOutcome.NOT_OPENED: C.FAILED,
    AckOutcome.FAILED: C.FAILED,
    AckOutcome.REJECTED: C.REJECTED,
}


def outcome_status(outcome: AckOutcome | str) -> CommandStatus:
    return _OUTCOME_STATUS[AckOutcome(outcome)]


@dataclass(frozen=True, slots=True)
class CommandRow:
    id: str
    cabinet: str
    compartment: str
    counter: int
    reason: str | None
    actor: str
    parcel: str | None
    purpose: str
    status: CommandStatus
    created_at: datetime
    expires_at: datetime
    outcome: str | None
    outcome_reason: str | None


_COLUMNS = (
    "id, cabinet, compartment, counter, reason, actor, parcel, purpose, status,"
    " created_at, expires_at, outcome, outcome_reason"
)


def command_row(values: Any) -> CommandRow:
    """A row of ``commands`` read as its columns come (``RETURNING`` of the rules here)."""
    fields = list(values)
    fields[8] = CommandStatus(fields[8])
    return CommandRow(*fields)


def get_command(conn: psycopg.Connection[Any], command: str) -> CommandRow:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM commands WHERE id = %s",  # noqa: S608
        (command,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no command {command}", command=command)
    return command_row(row)


def create_ctes(*, only_if: str | None = None) -> str:
    """Creating a command as common table expressions: ``target`` (the compartment,
    within the sites if given), ``counter`` (the cabinet's next counter: a row of its own
    in command_counters, migration 0012, not the cabinets row ingest keeps locked) and
    ``created`` (the new row, columns as :func:`command_row` reads them; none: no such
    compartment). Named parameters as :func:`create_params` gives them. A statement of
    its own (:func:`create_command`) or a part of a larger one (the API's unlock).

    With ``only_if`` (an SQL condition on the enclosing statement's other CTEs, e.g. the
    API's rate-limit gate) the command is created only where it holds as well: otherwise
    ``created`` is empty and nothing is written."""
    condition = "" if only_if is None else f" AND ({only_if})"
    return (
        "target AS (SELECT cab.id FROM cabinets cab JOIN compartments comp"  # noqa: S608
        " ON comp.cabinet = cab.id AND comp.id = %(compartment)s WHERE cab.id = %(cabinet)s"
        f" AND (%(sites)s::text[] IS NULL OR cab.site = ANY(%(sites)s::text[])){condition}),"
        " counter AS (INSERT INTO command_counters AS cc (cabinet, counter)"
        " SELECT id, 1 FROM target ON CONFLICT (cabinet) DO UPDATE SET counter = cc.counter + 1"
        " RETURNING counter),"
        " created AS (INSERT INTO commands (id, cabinet, compartment, counter, reason, actor,"
        " parcel, purpose, created_at, expires_at)"
        " SELECT %(id)s, %(cabinet)s, %(compartment)s, counter, %(reason)s, %(actor)s,"
        " %(parcel)s, %(purpose)s, %(now)s, %(expires)s FROM counter"
        f" RETURNING {_COLUMNS})"
    )


# One statement (atomic by itself, one round trip).
_CREATE = f"WITH {create_ctes()} SELECT * FROM created"  # noqa: S608 (constants)


def create_params(
    command_id: str,
    cabinet: str,
    compartment: str,
    *,
    reason: str | None,
    actor: str,
    now: datetime,
    parcel: str | None = None,
    purpose: str = "operator",
    ttl: timedelta = COMMAND_TTL,
    sites: Collection[str] | None = None,
) -> dict[str, Any]:
    """The parameters of :func:`create_ctes`."""
    return {
        "id": command_id,
        "cabinet": cabinet,
        "compartment": compartment,
        "reason": reason,
        "actor": actor,
        "parcel": parcel,
        "purpose": purpose,
        "now": now,
        "expires": now + ttl,
        "sites": None if sites is None else sorted(sites),
    }


def _no_compartment(cabinet: str, compartment: str) -> str:
    return f"no compartment {compartment} in cabinet {cabinet}"


def missing_compartment(cabinet: str, compartment: str) -> NotFound:
    """The error for a command whose compartment does not exist (within the sites given)."""
    return NotFound(_no_compartment(cabinet, compartment), cabinet=cabinet, compartment=compartment)


def create_command(
    conn: psycopg.Connection[Any],
    cabinet: str,
    compartment: str,
    *,
    reason: str | None,
    actor: str,
    now: datetime,
    parcel: str | None = None,
    purpose: str = "operator",
    ttl: timedelta = COMMAND_TTL,
    command_id: str | None = None,
    sites: Collection[str] | None = None,
) -> CommandRow:
    """A new unlock command (status ``created``) with the cabinet's next counter.

    ``command_id`` lets the caller name it beforehand (e.g. in an audit row written
    in the same transaction); by default a new message id. ``sites`` (None: any)
    limits the cabinets it may be created in.
    """
    values = conn.execute(
        _CREATE,
        create_params(
            command_id or new_message_id(),
            cabinet,
            compartment,
            reason=reason,
            actor=actor,
            now=now,
            parcel=parcel,
            purpose=purpose,
            ttl=ttl,
            sites=sites,
        ),
    ).fetchone()
    if values is None:
        raise missing_compartment(cabinet, compartment)
    command = command_row(values)
    logger.info(
        "command %s created: unlock %s/%s (%s, by %s)",
        command.id,
        cabinet,
        compartment,
        purpose,
        actor,
    )
    return command


def mark_sent(conn: psycopg.Connection[Any], command: str, *, now: datetime) -> bool:
    """created → sent; False when the command was already past ``created``."""
    cur = conn.execute(
        "UPDATE commands SET status = 'sent', sent_at = %s WHERE id = %s AND status = 'created'",
        (now, command),
    )
    return cur.rowcount == 1


def record_outcome(
    conn: psycopg.Connection[Any],
    command: str,
    cabinet: str,
    outcome: AckOutcome | str,
    reason: str | None,
    *,
    now: datetime,
) -> CommandRow | None:
    """Apply an ack; returns the updated row, or None (unknown, other cabinet, or final)."""
    return send_outcome(conn, command, cabinet, outcome, reason, now=now).row()


@dataclass(frozen=True, slots=True)
class PendingOutcome:
    """An ack's outcome sent to the server whose row is read later (:func:`send_outcome`)."""

    cursor: psycopg.Cursor[Any]
    command: str
    cabinet: str
    #: Whether the statement also says if alerts were open (``send_outcome(alerts_open=)``).
    asks_alerts: bool = False

    def row(self) -> CommandRow | None:
        """The updated command, or None (unknown, other cabinet, or final)."""
        return self.read()[0]

    def read(self) -> tuple[CommandRow | None, bool | None]:
        """The updated command (or None), and whether alerts of the kinds asked about
        were open on its compartment (None: not asked, or no command moved)."""
        values = self.cursor.fetchone()
        if values is None:
            logger.info(
                "ack for command %s of %s ignored (unknown or final)", self.command, self.cabinet
            )
            return None, None
        if self.asks_alerts:
            return command_row(values[:-1]), bool(values[-1])
        return command_row(values), None


def send_outcome(
    conn: psycopg.Connection[Any],
    command: str,
    cabinet: str,
    outcome: AckOutcome | str,
    reason: str | None,
    *,
    now: datetime,
    alerts_open: Sequence[str] = (),
) -> PendingOutcome:
    """Send the statement of :func:`record_outcome` without reading its result.

    In pipeline mode nothing waits for the row until it is read, so the statements
    that follow go in the same round trip (ingest's ack lane). With ``alerts_open``
    (alert kinds) the same statement also says whether any of them is open on the
    command's compartment (:meth:`PendingOutcome.read`), so that a clearing that
    would change nothing need not be sent.
    """
    status = outcome_status(outcome)
    allowed_from = [src.value for (src, dst) in COMMAND_TRANSITIONS if dst is status]
    params: list[Any] = [
        status.value,
        AckOutcome(outcome).value,
        reason,
        now,
        command,
        cabinet,
        allowed_from,
    ]
    returning = _COLUMNS
    if alerts_open:
        returning += _ALERTS_OPEN
        params.append([str(kind) for kind in alerts_open])
    cursor = conn.execute(
        "UPDATE commands SET status = %s, outcome = %s, outcome_reason = %s, finished_at = %s"  # noqa: S608 (constant column list)
        f" WHERE id = %s AND cabinet = %s AND status = ANY(%s) RETURNING {returning}",
        params,
    )
    return PendingOutcome(cursor, command, cabinet, bool(alerts_open))


#: Whether alerts of some kinds are open on the command's compartment (see send_outcome).
_ALERTS_OPEN = (
    ", EXISTS (SELECT 1 FROM alerts a WHERE a.cabinet = commands.cabinet"
    " AND coalesce(a.compartment, '') = coalesce(commands.compartment, '')"
    " AND a.kind = ANY(%s) AND a.cleared_at IS NULL)"
)


def expire_commands(conn: psycopg.Connection[Any], now: datetime) -> list[CommandRow]:
    """Every created or sent command past its expiry → timed_out."""
    rows = conn.execute(
        "UPDATE commands SET status = 'timed_out', finished_at = %s"  # noqa: S608 (constant column list)
        " WHERE status IN ('created', 'sent') AND expires_at <= %s"
        f" RETURNING {_COLUMNS}",
        (now, now),
    ).fetchall()
    for row in rows:
        logger.warning("command %s to %s timed out", row[0], row[1])
    return [command_row(r) for r in rows]
