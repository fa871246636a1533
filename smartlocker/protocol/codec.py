"""Bytes ⇄ messages: the one parse entry point for everything on the wire.

Whatever arrives, :func:`decode` returns a message model or raises a
:class:`~smartlocker.protocol.errors.MalformedMessage` (or a subclass) with a
reason; it never lets another exception escape.
"""

from __future__ import annotations

import json
from typing import Any, Final

from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import MalformedMessage, PayloadTooLarge, UnsupportedVersion
from .messages import (
    CHANNEL_MESSAGES,
    PROTOCOL_VERSION,
    DownlinkMessage,
    Event,
    UplinkMessage,
)
from .topics import Channel

__all__ = ["MAX_PAYLOAD_BYTES", "decode", "decode_downlink", "decode_uplink", "encode"]

#: A desired state with thousands of codes fits; anything larger is refused unread.
MAX_PAYLOAD_BYTES: Final = 1 << 20


def _adapter_for(types: tuple[type[BaseModel], ...]) -> TypeAdapter[Any]:
    if len(types) == 1:
        return TypeAdapter(types[0])
    return TypeAdapter(Event)


_CHANNEL_ADAPTERS: dict[Channel, TypeAdapter[Any]] = {
    channel: _adapter_for(types) for channel, types in CHANNEL_MESSAGES.items()
}
_UPLINK: TypeAdapter[UplinkMessage] = TypeAdapter(UplinkMessage)
_DOWNLINK: TypeAdapter[DownlinkMessage] = TypeAdapter(DownlinkMessage)


def encode(message: BaseModel) -> bytes:
    """The wire form of a message: compact UTF-8 JSON."""
    return message.__pydantic_serializer__.to_json(message)


def decode(channel: Channel, payload: bytes | bytearray | str) -> Any:
    """Parse a payload received on ``channel`` into its message model."""
    return _validate(_CHANNEL_ADAPTERS[Channel(channel)], payload)


def decode_uplink(payload: bytes | bytearray | str) -> UplinkMessage:
    """Parse any cabinet → cloud message."""
    result: UplinkMessage = _validate(_UPLINK, payload)
    return result


def decode_downlink(payload: bytes | bytearray | str) -> DownlinkMessage:
    """Parse any cloud → cabinet message."""
    result: DownlinkMessage = _validate(_DOWNLINK, payload)
    return result


def _validate(adapter: TypeAdapter[Any], payload: bytes | bytearray | str) -> Any:
    if not isinstance(payload, bytes | bytearray | str):
        raise MalformedMessage(f"payload must be bytes or str, not {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        return adapter.validate_json(payload)
    except ValidationError as exc:
        _raise_version_error(payload)
        raise MalformedMessage(_describe(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise MalformedMessage(f"unparseable payload: {exc}") from None


def _raise_version_error(payload: bytes | bytearray | str) -> None:
    """Only on the error path: tell an unknown ``v`` apart from other faults."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return
    if isinstance(data, dict) and "v" in data and data["v"] != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"unsupported protocol version: {data['v']!r}")


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    where = ".".join(str(part) for part in first.get("loc", ())) or "payload"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"
