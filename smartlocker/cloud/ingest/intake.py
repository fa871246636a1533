"""From raw MQTT messages to decoded messages or dead letters (no I/O).

The topic names the cabinet (the broker's ACL lets a cabinet write only its own
topics), so a payload claiming another cabinet is refused as unauthenticated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from smartlocker.protocol import (
    Ack,
    Channel,
    InvalidTopic,
    ProtocolError,
    Reported,
    Status,
    Telemetry,
    TopicScheme,
    decode,
)

from .deadletter import DeadLetter, Reason

__all__ = ["Inbound", "Sorted", "TopicCache", "sort_batch"]

_REASONS = {r.value: r for r in Reason}


@dataclass(slots=True)
class Inbound:
    """One message as it came off the wire, with the token that acknowledges it."""

    topic: str
    payload: bytes
    received_at: datetime
    token: Any = None


@dataclass(slots=True)
class Sorted:
    """A batch split by kind; events keep their inbound message (payload → ``body``)."""

    events: list[tuple[Any, Inbound]] = field(default_factory=list)
    telemetry: list[Telemetry] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    reported: list[Reported] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    #: Where each decoded non-event message came from (for dead-lettering it later).
    origin: dict[int, Inbound] = field(default_factory=dict)

    def cabinets(self) -> set[str]:
        found = {m.cabinet for m, _ in self.events}
        for group in (self.telemetry, self.statuses, self.acks, self.reported):
            found.update(m.cabinet for m in group)
        return found


class TopicCache:
    """``topic → (cabinet, channel)`` for uplink topics, parsed once each."""

    def __init__(self, scheme: TopicScheme, limit: int = 200_000) -> None:
        self._scheme = scheme
        self._known: dict[str, tuple[str, Channel]] = {}
        self._limit = limit

    def parse(self, topic: str) -> tuple[str, Channel]:
        hit = self._known.get(topic)
        if hit is not None:
            return hit
        parsed = self._scheme.parse(topic)
        if not parsed.channel.uplink:
            raise InvalidTopic(f"not an uplink channel: {topic!r}")
        if len(self._known) >= self._limit:
            self._known.clear()
        result = (parsed.cabinet, parsed.channel)
        self._known[topic] = result
        return result


def sort_batch(items: Sequence[Inbound], topics: TopicCache) -> Sorted:
    """Decode every message of a batch; what cannot be used becomes a dead letter."""
    out = Sorted()
    for item in items:
        try:
            cabinet, channel = topics.parse(item.topic)
            message = decode(channel, item.payload)
        except ProtocolError as exc:
            reason = Reason.INVALID_TOPIC if isinstance(exc, InvalidTopic) else None
            if reason is None:
                reason = _REASONS.get(getattr(exc, "reason", ""), Reason.MALFORMED)
            out.dead.append(
                DeadLetter(item.topic, bytes(item.payload), reason, str(exc), item.received_at)
            )
            continue
        if message.cabinet != cabinet:
            out.dead.append(
                DeadLetter(
                    item.topic,
                    bytes(item.payload),
                    Reason.CABINET_MISMATCH,
                    f"payload cabinet {message.cabinet!r} on the topic of {cabinet!r}",
                    item.received_at,
                )
            )
            continue
        if channel is Channel.EVENTS:
            out.events.append((message, item))
            continue
        out.origin[id(message)] = item
        if channel is Channel.TELEMETRY:
            out.telemetry.append(message)
        elif channel is Channel.STATUS:
            out.statuses.append(message)
        elif channel is Channel.ACKS:
            out.acks.append(message)
        else:
            out.reported.append(message)
    return out


def dead_letter_for(item: Inbound, reason: Reason, detail: str) -> DeadLetter:
    return DeadLetter(item.topic, bytes(item.payload), reason, detail, item.received_at)
