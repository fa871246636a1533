"""Cloud → cabinet: signed commands and the retained, versioned desired state.

One service signs (Ed25519, the key of ``SMARTLOCKER_SIGNING_KEY``) and publishes
through a :class:`Publisher` (gmqtt in ingest, paho in the API):

* commands: :func:`create_unlock_command` (a ``commands`` row, status
  ``created``, the cabinet's next counter, a short expiry), then
  :func:`send_command` (sign, publish QoS 1 never retained, status ``sent``);
  acks move them on (:mod:`.reactions`); :func:`expire_commands` times them out.
* desired state: :func:`build_desired_state` compares what the cabinet should
  hold (compartment enabled flags, valid code hashes) with its last version and
  stores a new version only when it differs; :func:`publish_desired` signs and
  publishes it retained. The message id and ``ts`` are stored with the version,
  so a re-publication is byte-identical.

Publish after commit: call :func:`publish_desired` and :func:`publish_effects`
with no transaction open, so that the version row is committed before any
cabinet can see it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import psycopg
from psycopg.types.json import Jsonb

from smartlocker.protocol import (
    Channel,
    CodeGrant,
    CodeKind,
    DesiredCompartment,
    DesiredState,
    Ed25519PrivateKey,
    TopicScheme,
    UnlockCommand,
    encode,
    new_message_id,
    sign,
)

from .errors import Conflict, NotFound
from .rules.alerts import AlertKind, raise_alert
from .rules.commands import (
    COMMAND_TTL,
    CommandRow,
    CommandStatus,
    create_command,
    get_command,
    mark_sent,
)
from .rules.commands import expire_commands as _expire_commands

__all__ = [
    "COMMAND_TTL",
    "ExpiringPublisher",
    "Publisher",
    "build_desired_state",
    "create_unlock_command",
    "expire_commands",
    "prune_desired_states",
    "publish_command",
    "publish_desired",
    "publish_effects",
    "send_command",
    "unlock_message",
]

logger = logging.getLogger(__name__)

_DEFAULT_TOPICS = TopicScheme()


class Publisher(Protocol):
    """Publishes one MQTT message (gmqtt in ingest, paho in the API)."""

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None: ...


@runtime_checkable
class ExpiringPublisher(Publisher, Protocol):
    """A publisher that can give a message an MQTT 5 expiry (the API's, for commands)."""

    def publish_expiring(self, topic: str, payload: bytes, qos: int, expiry_s: int) -> None: ...


class _HasDesiredChanged(Protocol):
    @property
    def desired_changed(self) -> Iterable[str]: ...


# --- desired state ---------------------------------------------------------------


def _desired_document(conn: psycopg.Connection[Any], cabinet: str) -> dict[str, Any]:
    compartments = [
        DesiredCompartment(id=row[0], enabled=bool(row[1])).model_dump(mode="json")
        for row in conn.execute(
            "SELECT id, enabled AND NOT out_of_service FROM compartments"
            " WHERE cabinet = %s ORDER BY id",
            (cabinet,),
        )
    ]
    codes = [
        CodeGrant(
            hash=row[0],
            compartment=row[1],
            kind=CodeKind(row[2]),
            parcel=row[3],
            valid_until=row[4],
        ).model_dump(mode="json")
        for row in conn.execute(
            """
            SELECT c.hash, c.compartment, c.kind, c.parcel, c.valid_until
            FROM codes c JOIN parcels p ON p.id = c.parcel
            WHERE c.cabinet = %s AND c.used_at IS NULL AND c.revoked_at IS NULL
              AND ((c.kind = 'pickup' AND p.state = 'deposited')
                   OR (c.kind = 'deposit' AND p.state = 'reserved'))
            ORDER BY c.compartment, c.kind, c.hash
            """,
            (cabinet,),
        )
    ]
    return {"compartments": compartments, "codes": codes}


def build_desired_state(
    conn: psycopg.Connection[Any], cabinet: str, *, now: datetime | None = None
) -> DesiredState:
    """The cabinet's current desired state (unsigned), stored as a new version if it changed.

    The version rises on every change and never otherwise; the cabinet row is
    locked while comparing, so concurrent builders agree on the numbers.
    """
    with conn.transaction():
        row = conn.execute(
            "SELECT desired_version FROM cabinets WHERE id = %s FOR NO KEY UPDATE", (cabinet,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no cabinet {cabinet}", cabinet=cabinet)
        document = _desired_document(conn, cabinet)
        last = conn.execute(
            "SELECT version, created_at, message_id, document FROM desired_states"
            " WHERE cabinet = %s ORDER BY version DESC LIMIT 1",
            (cabinet,),
        ).fetchone()
        if last is not None and last[3] == document:
            version, created_at, message_id = last[0], last[1], last[2]
        else:
            version = max(row[0], last[0] if last else 0) + 1
            message_id = new_message_id()
            stamp = conn.execute("SELECT coalesce(%s, now())", (now,)).fetchone()
            assert stamp is not None
            created_at = stamp[0]
            conn.execute(
                "INSERT INTO desired_states (cabinet, version, created_at, message_id, document)"
                " VALUES (%s, %s, %s, %s, %s)",
                (cabinet, version, created_at, message_id, Jsonb(document)),
            )
            conn.execute(
                "UPDATE cabinets SET desired_version = %s WHERE id = %s", (version, cabinet)
            )
            logger.info("desired state of %s: version %d", cabinet, version)
    return DesiredState.model_validate(
        {
            "id": message_id,
            "ts": created_at,
            "cabinet": cabinet,
            "version": version,
            **document,
        },
        strict=False,
    )


def prune_desired_states(conn: psycopg.Connection[Any], keep: int = 20) -> int:
    """Delete all but the newest ``keep`` desired-state versions of each cabinet."""
    cur = conn.execute(
        "DELETE FROM desired_states d USING cabinets k"
        " WHERE d.cabinet = k.id AND d.version <= k.desired_version - %s",
        (keep,),
    )
    return cur.rowcount


def publish_desired(
    conn: psycopg.Connection[Any],
    publisher: Publisher,
    signing_key: Ed25519PrivateKey,
    cabinet: str,
    *,
    topics: TopicScheme = _DEFAULT_TOPICS,
    now: datetime | None = None,
) -> DesiredState:
    """Build (committing a new version if needed), sign and publish retained, QoS 1."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("publish_desired needs a connection with no transaction open")
    state = sign(build_desired_state(conn, cabinet, now=now), signing_key)
    topic = topics.topic(cabinet, Channel.DESIRED)
    publisher.publish(str(topic), encode(state), Channel.DESIRED.qos, True)
    return state


def publish_effects(
    conn: psycopg.Connection[Any],
    publisher: Publisher,
    signing_key: Ed25519PrivateKey,
    effects: _HasDesiredChanged | Iterable[_HasDesiredChanged | None],
    *,
    topics: TopicScheme = _DEFAULT_TOPICS,
    now: datetime | None = None,
) -> list[DesiredState]:
    """After the commit: republish the desired state of every cabinet the effects name.

    Takes one ``Effects`` or several (``None`` entries, from rules that react to
    nothing, are skipped).
    """
    items = [effects] if hasattr(effects, "desired_changed") else effects
    cabinets: set[str] = set()
    for item in items:
        if item is not None:
            cabinets.update(item.desired_changed)
    return [
        publish_desired(conn, publisher, signing_key, cabinet, topics=topics, now=now)
        for cabinet in sorted(cabinets)
    ]


# --- commands ----------------------------------------------------------------------


def create_unlock_command(
    conn: psycopg.Connection[Any],
    cabinet: str,
    compartment: str,
    reason: str | None,
    actor: str,
    *,
    now: datetime,
    parcel: str | None = None,
    purpose: str = "operator",
    ttl: timedelta = COMMAND_TTL,
    command_id: str | None = None,
) -> CommandRow:
    """A ``commands`` row (status created, next counter, expires = now + ttl)."""
    return create_command(
        conn,
        cabinet,
        compartment,
        reason=reason,
        actor=actor,
        now=now,
        parcel=parcel,
        purpose=purpose,
        ttl=ttl,
        command_id=command_id,
    )


def unlock_message(command: CommandRow, signing_key: Ed25519PrivateKey) -> UnlockCommand:
    """The signed wire message of a command row (the same bytes every time)."""
    message = UnlockCommand(
        id=command.id,
        ts=command.created_at,
        cabinet=command.cabinet,
        compartment=command.compartment,
        counter=command.counter,
        expires=command.expires_at,
        reason=command.reason,
    )
    return sign(message, signing_key)


def send_command(
    conn: psycopg.Connection[Any],
    publisher: Publisher,
    signing_key: Ed25519PrivateKey,
    command: str,
    *,
    now: datetime,
    topics: TopicScheme = _DEFAULT_TOPICS,
) -> UnlockCommand:
    """Sign and publish (QoS 1, never retained); status created → sent.

    Raises :class:`Conflict` for a command that is already final or expired
    (an expired one is marked ``timed_out``).
    """
    row = get_command(conn, command)
    if row.status not in (CommandStatus.CREATED, CommandStatus.SENT):
        raise Conflict(f"command {command} is {row.status}", command=command)
    if row.expires_at <= now:
        expire_commands(conn, now)
        raise Conflict(f"command {command} expired before it was sent", command=command)
    message = publish_command(publisher, signing_key, row, now=now, topics=topics)
    with conn.transaction():
        mark_sent(conn, command, now=now)
    return message


def publish_command(
    publisher: Publisher,
    signing_key: Ed25519PrivateKey,
    row: CommandRow,
    *,
    now: datetime,
    topics: TopicScheme = _DEFAULT_TOPICS,
) -> UnlockCommand:
    """Sign and publish a command row the caller holds (fresh from its creation).

    The MQTT message expires with the command (``now`` to ``row.expires_at``).

    No status check and no ``sent`` mark: :func:`send_command` does both for a
    command known only by id; a caller that just created the row marks it itself.
    """
    message = unlock_message(row, signing_key)
    topic = topics.topic(row.cabinet, Channel.COMMANDS)
    if isinstance(publisher, ExpiringPublisher):
        # The broker drops it from an offline cabinet's session once expired: a cabinet
        # back from a power cut never pulses for a command the cloud has timed out,
        # even if its own clock (behind) would still take it for valid.
        expiry = max(1, math.ceil((row.expires_at - now).total_seconds()))
        publisher.publish_expiring(str(topic), encode(message), Channel.COMMANDS.qos, expiry)
    else:
        publisher.publish(str(topic), encode(message), Channel.COMMANDS.qos, False)
    return message


def expire_commands(conn: psycopg.Connection[Any], now: datetime) -> list[CommandRow]:
    """created/sent commands past expiry → timed_out, each with a command_failed alert."""
    with conn.transaction():
        expired = _expire_commands(conn, now)
        for row in expired:
            raise_alert(
                conn,
                row.cabinet,
                AlertKind.COMMAND_FAILED,
                now=now,
                compartment=row.compartment,
                detail=f"command {row.id} timed out",
            )
    return expired
