"""The MQTT topic scheme of CONTRACT.md as validated values.

Nobody concatenates topic strings elsewhere: build a :class:`Topic` with
:meth:`TopicScheme.topic`, read one with :meth:`TopicScheme.parse`, and subscribe
with a :class:`TopicFilter`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from .errors import InvalidTopic
from .ids import validate_cabinet_id

__all__ = [
    "DEFAULT_PREFIX",
    "Channel",
    "Topic",
    "TopicFilter",
    "TopicScheme",
]

DEFAULT_PREFIX = "lockers"
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
_SHARE_GROUP_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Channel(StrEnum):
    """The last topic level: what kind of traffic flows on the topic."""

    EVENTS = "events"
    TELEMETRY = "telemetry"
    STATUS = "status"
    ACKS = "acks"
    REPORTED = "reported"
    COMMANDS = "commands"
    DESIRED = "desired"
    RECEIPTS = "receipts"

    @property
    def uplink(self) -> bool:
        """True for cabinet → cloud channels (the cabinet may publish there)."""
        return self in _UPLINK

    @property
    def retained(self) -> bool:
        """True where CONTRACT.md says messages are published retained."""
        return self in _RETAINED

    @property
    def qos(self) -> int:
        """The QoS CONTRACT.md prescribes (telemetry may also use 1)."""
        return 0 if self is Channel.TELEMETRY else 1


_UPLINK = frozenset(
    {Channel.EVENTS, Channel.TELEMETRY, Channel.STATUS, Channel.ACKS, Channel.REPORTED}
)
_RETAINED = frozenset({Channel.STATUS, Channel.REPORTED, Channel.DESIRED})


@dataclass(frozen=True, slots=True)
class Topic:
    """One concrete topic: ``{prefix}/{cabinet}/{channel}``."""

    prefix: str
    cabinet: str
    channel: Channel

    def __post_init__(self) -> None:
        _check_prefix(self.prefix)
        try:
            validate_cabinet_id(self.cabinet)
        except ValueError as exc:
            raise InvalidTopic(str(exc)) from exc
        if not isinstance(self.channel, Channel):
            raise InvalidTopic(f"unknown channel: {self.channel!r}")

    def __str__(self) -> str:
        return f"{self.prefix}/{self.cabinet}/{self.channel.value}"


@dataclass(frozen=True, slots=True)
class TopicFilter:
    """An MQTT subscription filter with the standard wildcard semantics."""

    value: str

    def __post_init__(self) -> None:
        levels = self.value.split("/")
        if not self.value or any(lvl != "#" and "#" in lvl for lvl in levels):
            raise InvalidTopic(f"bad topic filter: {self.value!r}")
        if "#" in levels[:-1] or any(lvl != "+" and "+" in lvl for lvl in levels):
            raise InvalidTopic(f"bad topic filter: {self.value!r}")

    def matches(self, topic: str | Topic) -> bool:
        """Whether a published topic matches this filter (MQTT 3.1.1 §4.7)."""
        name = str(topic)
        t_levels = name.split("/")
        f_levels = self.value.split("/")
        if name.startswith("$") and f_levels[0] in ("+", "#"):
            return False
        for i, f in enumerate(f_levels):
            if f == "#":
                return True
            if i >= len(t_levels):
                return False
            if f != "+" and f != t_levels[i]:
                return False
        return len(t_levels) == len(f_levels)

    def __str__(self) -> str:
        return self.value


class TopicScheme:
    """Builds and parses the topics under one prefix (``lockers`` by default)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        _check_prefix(prefix)
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"TopicScheme({self.prefix!r})"

    def topic(self, cabinet: str, channel: Channel | str) -> Topic:
        """The topic of ``cabinet`` on ``channel``; raises :class:`InvalidTopic`."""
        return Topic(self.prefix, cabinet, _channel(channel))

    def parse(self, topic: str) -> Topic:
        """Read a concrete topic back into its parts; raises :class:`InvalidTopic`."""
        if not isinstance(topic, str) or not topic.startswith(self.prefix + "/"):
            raise InvalidTopic(f"topic not under {self.prefix!r}: {topic!r}")
        rest = topic[len(self.prefix) + 1 :].split("/")
        if len(rest) != 2:
            raise InvalidTopic(f"topic has the wrong number of levels: {topic!r}")
        return Topic(self.prefix, rest[0], _channel(rest[1]))

    def all_cabinets(self, channel: Channel | str) -> TopicFilter:
        """The filter for ``channel`` of every cabinet: ``{prefix}/+/{channel}``."""
        return TopicFilter(f"{self.prefix}/+/{_channel(channel).value}")

    def shared(self, group: str, channel: Channel | str) -> str:
        """An MQTT 5 shared subscription so that several workers split a stream."""
        if not _SHARE_GROUP_RE.fullmatch(group):
            raise InvalidTopic(f"bad shared-subscription group: {group!r}")
        return f"$share/{group}/{self.all_cabinets(channel).value}"


def _check_prefix(prefix: str) -> None:
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise InvalidTopic(f"bad topic prefix: {prefix!r}")


def _channel(value: Channel | str) -> Channel:
    try:
        return Channel(value)
    except ValueError:
        raise InvalidTopic(f"unknown channel: {value!r}") from None
