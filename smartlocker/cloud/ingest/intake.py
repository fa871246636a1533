"""From raw MQTT messages to decoded messages or dead letters (no I/O).

The topic names the cabinet (the broker's ACL lets a cabinet write only its own
topics), so a payload claiming another cabinet is refused as unauthenticated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, overload

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
from .fastpath import parse_event

__all__ = ["EventModels", "EventRow", "Inbound", "Sorted", "TopicCache", "sort_batch"]

_REASONS = {r.value: r for r in Reason}


@dataclass(slots=True)
class Inbound:
    """One message as it came off the wire, with the token that acknowledges it."""

    topic: str
    payload: bytes
    received_at: datetime
    token: Any = None


class EventRow:
    """One event of a batch: its columns, its inbound message, its model on demand.

    Events that took the fast path (:mod:`.fastpath`) have no model until the rules
    ask for one: storing them needs only the columns and the payload.
    """

    __slots__ = ("_message", "cabinet", "compartment", "id", "item", "seq", "ts", "type")

    def __init__(
        self,
        cabinet: str,
        seq: int,
        ts: datetime,
        id: str,
        type: str,
        compartment: str | None,
        item: Inbound,
        message: Any = None,
    ) -> None:
        self.cabinet = cabinet
        self.seq = seq
        self.ts = ts
        self.id = id
        self.type = type
        self.compartment = compartment
        self.item = item
        self._message = message

    @classmethod
    def of(cls, message: Any, item: Inbound) -> EventRow:
        return cls(
            message.cabinet,
            message.seq,
            message.ts,
            message.id,
            message.type,
            getattr(message, "compartment", None),
            item,
            message,
        )

    @property
    def key(self) -> tuple[str, int, datetime]:
        """The de-duplication key of ``events``."""
        return (self.cabinet, self.seq, self.ts)

    @property
    def message(self) -> Any:
        """The event's model (decoded now if the fast path took it)."""
        if self._message is None:
            self._message = decode(Channel.EVENTS, self.item.payload)
        return self._message


class EventModels(Sequence[Any]):
    """The models of some event rows in ``(cabinet, seq, ts)`` order, decoded on first use."""

    def __init__(self, rows: Sequence[EventRow]) -> None:
        self._rows = rows
        self._models: list[Any] | None = None

    def _all(self) -> list[Any]:
        if self._models is None:
            ordered = sorted(self._rows, key=lambda r: (r.cabinet, r.seq, r.ts))
            self._models = [r.message for r in ordered]
        return self._models

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        return self._all()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._all())


@dataclass(slots=True)
class Sorted:
    """A batch split by kind; events keep their inbound message (payload → ``body``)."""

    events: list[EventRow] = field(default_factory=list)
    telemetry: list[Telemetry] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    reported: list[Reported] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    #: Where each decoded non-event message came from (for dead-lettering it later).
    origin: dict[int, Inbound] = field(default_factory=dict)

    def cabinets(self) -> set[str]:
        found = {r.cabinet for r in self.events}
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
    events = out.events
    for item in items:
        try:
            cabinet, channel = topics.parse(item.topic)
            if channel is Channel.EVENTS and type(item.payload) is bytes:
                cols = parse_event(item.payload)
                if cols is not None and cols[0] == cabinet:
                    events.append(EventRow(*cols, item))
                    continue
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
            events.append(EventRow.of(message, item))
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
