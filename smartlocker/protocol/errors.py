"""One error tree for everything the protocol refuses.

Each leaf also subclasses the built-in it resembles, and carries a structured
``reason`` so that callers can log and count refusals without parsing text.
"""

from __future__ import annotations

__all__ = [
    "BadSignature",
    "InvalidId",
    "InvalidTopic",
    "MalformedMessage",
    "PayloadTooLarge",
    "ProtocolError",
    "UnsupportedVersion",
]


class ProtocolError(Exception):
    """Root of every error the protocol raises for bad input."""

    reason: str = "protocol_error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class MalformedMessage(ProtocolError, ValueError):
    """The payload is not valid JSON or does not match any message model."""

    reason = "malformed"


class UnsupportedVersion(MalformedMessage):
    """The payload's ``v`` is not a protocol version this code speaks."""

    reason = "unsupported_version"


class PayloadTooLarge(MalformedMessage):
    """The payload is larger than the protocol allows; it was not parsed."""

    reason = "too_large"


class BadSignature(ProtocolError, ValueError):
    """A signed message failed verification (missing, forged or wrong key)."""

    reason = "bad_signature"


class InvalidId(ProtocolError, ValueError):
    """A cabinet or compartment id does not match the allowed pattern."""

    reason = "invalid_id"


class InvalidTopic(ProtocolError, ValueError):
    """A topic string is not one of the scheme's topics."""

    reason = "invalid_topic"
