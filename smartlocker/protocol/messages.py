"""Every message of CONTRACT.md as a frozen, strict pydantic model.

Each direction is a tagged union on ``type``; each MQTT channel accepts a
known subset (see :data:`CHANNEL_MESSAGES`). Models never do I/O: reading and
writing bytes is :mod:`smartlocker.protocol.codec`, signing is
:mod:`smartlocker.protocol.signing`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    StringConstraints,
)

from .ids import CabinetId, CompartmentId, MessageId, new_message_id
from .topics import Channel

__all__ = [
    "CHANNEL_MESSAGES",
    "PROTOCOL_VERSION",
    "Ack",
    "AckOutcome",
    "Alarm",
    "AlarmKind",
    "BootEvent",
    "CodeAccepted",
    "CodeGrant",
    "CodeKind",
    "CodeRejectReason",
    "CodeRejected",
    "Command",
    "CompartmentReport",
    "DesiredCompartment",
    "DesiredState",
    "DoorClosed",
    "DoorOpened",
    "DoorState",
    "DownlinkMessage",
    "Event",
    "Message",
    "Receipt",
    "Reported",
    "ShutdownEvent",
    "SignedMessage",
    "Status",
    "Telemetry",
    "UnlockCommand",
    "UnlockSource",
    "Unlocked",
    "UplinkMessage",
    "UtcDatetime",
    "channel_of",
    "utcnow",
]

PROTOCOL_VERSION = 1
#: Hex SHA-256 keyed hash of a code, see :mod:`smartlocker.protocol.codes`.
CodeHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ShortText = Annotated[str, StringConstraints(max_length=200)]
ParcelRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


#: RFC 3339 timestamps, always normalised to UTC (serialised with ``Z``).
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


class _Message(BaseModel):
    """Fields every message carries (CONTRACT.md, "Messages")."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    v: Literal[1] = 1
    id: MessageId = Field(default_factory=new_message_id)
    ts: UtcDatetime = Field(default_factory=utcnow)
    cabinet: CabinetId


# --- cabinet → cloud: events -------------------------------------------------


class DoorState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    UNKNOWN = "unknown"


class AlarmKind(StrEnum):
    FORCED_OPEN = "forced_open"  # door opened with no grant
    HELD_OPEN = "held_open"  # door open longer than allowed
    UNLOCK_FAILED = "unlock_failed"  # pulsed, door did not open in time
    LOCK_FAULT = "lock_fault"  # lock driver or sensor fault
    TEMPERATURE = "temperature"  # compartment temperature out of range


class UnlockSource(StrEnum):
    COMMAND = "command"
    PICKUP_CODE = "pickup_code"
    DEPOSIT_CODE = "deposit_code"


class CodeKind(StrEnum):
    PICKUP = "pickup"
    DEPOSIT = "deposit"


class CodeRejectReason(StrEnum):
    UNKNOWN = "unknown"  # no valid code matches
    EXPIRED = "expired"
    DISABLED = "disabled"  # its compartment is disabled
    THROTTLED = "throttled"  # kiosk is in a lockout after wrong tries
    MALFORMED = "malformed"


class _Event(_Message):
    """An event: persisted in the cabinet's outbox with a strictly rising ``seq``."""

    seq: PositiveInt


class BootEvent(_Event):
    type: Literal["boot"] = "boot"
    agent_version: ShortText


class ShutdownEvent(_Event):
    type: Literal["shutdown"] = "shutdown"
    reason: ShortText = "signal"


class DoorOpened(_Event):
    type: Literal["door_opened"] = "door_opened"
    compartment: CompartmentId
    #: Whether a grant (command or code) preceded the opening.
    granted: bool


class DoorClosed(_Event):
    type: Literal["door_closed"] = "door_closed"
    compartment: CompartmentId
    open_seconds: Annotated[float, Field(ge=0)] | None = None


class Unlocked(_Event):
    """The lock of ``compartment`` was pulsed, and why."""

    type: Literal["unlocked"] = "unlocked"
    compartment: CompartmentId
    source: UnlockSource
    command_id: MessageId | None = None
    parcel: ParcelRef | None = None
    pulse_ms: PositiveInt


class CodeAccepted(_Event):
    type: Literal["code_accepted"] = "code_accepted"
    compartment: CompartmentId
    kind: CodeKind
    parcel: ParcelRef
    code_hash: CodeHash


class CodeRejected(_Event):
    type: Literal["code_rejected"] = "code_rejected"
    kiosk: ShortText = "kiosk"
    reason: CodeRejectReason
    #: Consecutive wrong tries at this kiosk, including this one.
    attempts: NonNegativeInt
    locked_until: UtcDatetime | None = None


class Alarm(_Event):
    """An alarm raised (``active``) or cleared (not ``active``)."""

    type: Literal["alarm"] = "alarm"
    compartment: CompartmentId | None = None
    kind: AlarmKind
    active: bool
    detail: ShortText | None = None


Event = Annotated[
    BootEvent
    | ShutdownEvent
    | DoorOpened
    | DoorClosed
    | Unlocked
    | CodeAccepted
    | CodeRejected
    | Alarm,
    Field(discriminator="type"),
]

# --- cabinet → cloud: the rest ------------------------------------------------


class Telemetry(_Message):
    type: Literal["telemetry"] = "telemetry"
    uptime_s: Annotated[float, Field(ge=0)]
    outbox_depth: NonNegativeInt
    cpu_temp_c: float | None = None
    compartment_temps: dict[CompartmentId, float] = Field(default_factory=dict)


class Status(_Message):
    """Birth (``online``) and last will (not ``online``), both retained."""

    type: Literal["status"] = "status"
    online: bool
    agent_version: ShortText | None = None


class AckOutcome(StrEnum):
    OPENED = "opened"  # pulsed and the door opened
    NOT_OPENED = "not_opened"  # pulsed, but the door stayed closed
    REJECTED = "rejected"  # refused before any pulse (see ``reason``)
    FAILED = "failed"  # could not pulse (hardware fault)


class Ack(_Message):
    """The result of one command; a duplicate delivery gets the stored one again."""

    type: Literal["ack"] = "ack"
    command_id: MessageId
    compartment: CompartmentId | None = None
    outcome: AckOutcome
    reason: ShortText | None = None


class CompartmentReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    id: CompartmentId
    door: DoorState
    enabled: bool


class Reported(_Message):
    """The desired-state version the cabinet applied, plus a hardware snapshot."""

    type: Literal["reported"] = "reported"
    desired_version: NonNegativeInt
    compartments: list[CompartmentReport] = Field(default_factory=list, max_length=1000)
    agent_version: ShortText | None = None


UplinkMessage = Annotated[
    BootEvent
    | ShutdownEvent
    | DoorOpened
    | DoorClosed
    | Unlocked
    | CodeAccepted
    | CodeRejected
    | Alarm
    | Telemetry
    | Status
    | Ack
    | Reported,
    Field(discriminator="type"),
]

# --- cloud → cabinet ------------------------------------------------------------


class _Signed(_Message):
    #: Ed25519 signature (base64) over the canonical encoding of all other fields.
    sig: Annotated[str, StringConstraints(max_length=128)] = ""


class UnlockCommand(_Signed):
    """Pulse one compartment's lock, once, before ``expires``."""

    type: Literal["unlock"] = "unlock"
    compartment: CompartmentId
    #: Rises with every command to this cabinet; the cabinet accepts each counter once,
    #: within its replay window (:mod:`.replay`).
    counter: PositiveInt
    expires: UtcDatetime
    reason: ShortText | None = None


#: Every imperative command (one kind today; the union grows with new actions).
Command = UnlockCommand


class DesiredCompartment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    id: CompartmentId
    enabled: bool


class CodeGrant(BaseModel):
    """One valid code, stored only as its keyed hash."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    hash: CodeHash
    compartment: CompartmentId
    kind: CodeKind
    parcel: ParcelRef
    valid_until: UtcDatetime


class DesiredState(_Signed):
    """Signed, versioned, retained: what the cabinet should look like."""

    type: Literal["desired"] = "desired"
    version: PositiveInt
    compartments: list[DesiredCompartment] = Field(default_factory=list, max_length=1000)
    codes: list[CodeGrant] = Field(default_factory=list, max_length=5000)


class Receipt(_Message):
    """The cloud has committed this cabinet's events up to and including ``upto_seq``."""

    type: Literal["receipt"] = "receipt"
    upto_seq: NonNegativeInt


SignedMessage = UnlockCommand | DesiredState

DownlinkMessage = Annotated[
    UnlockCommand | DesiredState | Receipt,
    Field(discriminator="type"),
]

Message = UplinkMessage | DownlinkMessage

#: What each channel carries; the codec refuses anything else on that channel.
CHANNEL_MESSAGES: dict[Channel, tuple[type[_Message], ...]] = {
    Channel.EVENTS: (
        BootEvent,
        ShutdownEvent,
        DoorOpened,
        DoorClosed,
        Unlocked,
        CodeAccepted,
        CodeRejected,
        Alarm,
    ),
    Channel.TELEMETRY: (Telemetry,),
    Channel.STATUS: (Status,),
    Channel.ACKS: (Ack,),
    Channel.REPORTED: (Reported,),
    Channel.COMMANDS: (UnlockCommand,),
    Channel.DESIRED: (DesiredState,),
    Channel.RECEIPTS: (Receipt,),
}

_CHANNEL_OF: dict[type[_Message], Channel] = {
    model: channel for channel, models in CHANNEL_MESSAGES.items() for model in models
}


def channel_of(message: _Message) -> Channel:
    """The channel a message travels on (so publishers never pick it by hand)."""
    return _CHANNEL_OF[type(message)]
