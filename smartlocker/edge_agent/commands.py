"""Verification of commands, before anything else happens (pure; clock injected).

Order: parse → signature → cabinet → duplicate (a known id gets its stored
result) → retained → expiry (with a bounded clock skew) → replay (a counter seen
before, or at or below the high-water mark minus the window:
:class:`~smartlocker.protocol.ReplayWindow`). Only an :class:`Accepted` command may
lead to a pulse; the agent then checks the compartment itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from smartlocker.protocol import (
    BadSignature,
    Channel,
    Ed25519PublicKey,
    ProtocolError,
    ReplayWindow,
    UnlockCommand,
    decode,
    verify_payload,
)

from .store import CommandRecord

__all__ = ["Accepted", "Duplicate", "Rejected", "Verdict", "verify_command"]

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Accepted:
    command: UnlockCommand


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Delivered again: answer with the stored result, never act twice."""

    record: CommandRecord


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    detail: str
    #: Readable id (for the ack), if any.
    command_id: str | None = None
    compartment: str | None = None
    #: Authentic (signed by the cloud, for this cabinet): remember the result.
    authentic: bool = False
    counter: int | None = None


Verdict = Accepted | Duplicate | Rejected


def _readable_fields(payload: bytes) -> tuple[str | None, str | None]:
    """Best effort: the id and compartment of an unparseable command, for the ack."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    cid, comp = data.get("id"), data.get("compartment")
    good_id = cid if isinstance(cid, str) and _ID_RE.fullmatch(cid) else None
    good_comp = comp if isinstance(comp, str) and _ID_RE.fullmatch(comp) else None
    return good_id, good_comp


def verify_command(
    payload: bytes,
    *,
    retained: bool,
    key: Ed25519PublicKey,
    cabinet: str,
    now: datetime,
    skew: timedelta,
    replay: ReplayWindow,
    known: Callable[[str], CommandRecord | None],
) -> Verdict:
    """Decide what to do with one delivery on the ``commands`` topic."""
    try:
        command = decode(Channel.COMMANDS, payload)
    except ProtocolError as exc:
        cid, comp = _readable_fields(payload)
        return Rejected("malformed", f"{exc.reason}: {exc}", cid, None if cid is None else comp)
    assert isinstance(command, UnlockCommand)
    try:
        verify_payload(payload, key)
    except BadSignature as exc:
        return Rejected("bad_signature", str(exc), command.id, command.compartment)
    except ProtocolError as exc:
        return Rejected("malformed", str(exc), command.id, command.compartment)
    if command.cabinet != cabinet:
        return Rejected(
            "wrong_cabinet",
            f"command is for cabinet {command.cabinet!r}",
            command.id,
            command.compartment,
        )
    record = known(command.id)
    if record is not None:
        return Duplicate(record)

    def refuse(reason: str, detail: str) -> Rejected:
        return Rejected(
            reason, detail, command.id, command.compartment, authentic=True, counter=command.counter
        )

    if retained:
        return refuse("retained", "commands are never retained; a retained copy is refused")
    if command.expires + skew < now:
        return refuse("expired", f"expired at {command.expires.isoformat()}")
    if command.ts - skew > now:
        return refuse("expired", f"issued in the future ({command.ts.isoformat()})")
    replayed = replay.refusal(command.counter)
    if replayed is not None:
        return refuse("replayed", replayed)
    return Accepted(command)
