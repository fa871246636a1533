"""The Python broker's error tree: each error carries the MQTT 5 reason code to send."""

from __future__ import annotations

__all__ = [
    "MalformedPacket",
    "PacketTooLarge",
    "ProtocolViolation",
    "PyBrokerError",
]


class PyBrokerError(Exception):
    """Root of the Python broker's errors."""

    reason_code = 0x80  # Unspecified error


class ProtocolViolation(PyBrokerError, ValueError):
    """A well-formed packet that breaks the protocol (MQTT 5 reason 0x82)."""

    def __init__(self, message: str, reason_code: int = 0x82) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class MalformedPacket(ProtocolViolation):
    """Bytes that do not decode as an MQTT packet (MQTT 5 reason 0x81)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 0x81)


class PacketTooLarge(ProtocolViolation):
    """A packet longer than the broker's Maximum Packet Size (MQTT 5 reason 0x95)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 0x95)
