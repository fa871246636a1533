"""Topic names, topic filters, ``$share`` and matching, as MQTT 5 §4.7-4.8 define them.

Pure functions; the broker's routing table and the ACL both match with
:func:`matches`, so a ``$``-topic is never matched by a leading wildcard in either.
"""

from __future__ import annotations

from .errors import ProtocolViolation

__all__ = [
    "InvalidTopic",
    "matches",
    "split_shared",
    "validate_filter",
    "validate_topic",
]

_MAX_BYTES = 65535


class InvalidTopic(ProtocolViolation):
    """A topic name or filter the protocol forbids (reason 0x90 / 0x8F)."""


def validate_topic(topic: str) -> str:
    """A topic name a client may publish to: not empty, no wildcard."""
    if not topic:
        raise InvalidTopic("empty topic name", 0x90)
    if "+" in topic or "#" in topic:
        raise InvalidTopic(f"wildcard in topic name {topic!r}", 0x90)
    if len(topic.encode()) > _MAX_BYTES:
        raise InvalidTopic("topic name too long", 0x90)
    return topic


def validate_filter(topic_filter: str) -> str:
    """A (non-shared) topic filter: ``#`` only alone and last, ``+`` only alone in a level."""
    if not topic_filter:
        raise InvalidTopic("empty topic filter", 0x8F)
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise InvalidTopic(f"misplaced '#' in {topic_filter!r}", 0x8F)
        if "+" in level and level != "+":
            raise InvalidTopic(f"misplaced '+' in {topic_filter!r}", 0x8F)
    return topic_filter


def split_shared(topic_filter: str) -> tuple[str | None, str]:
    """``$share/group/filter`` → ``(group, filter)``; any other filter → ``(None, filter)``.

    Both parts are validated; a malformed shared filter raises :class:`InvalidTopic`.
    """
    if not topic_filter.startswith("$share/"):
        return None, validate_filter(topic_filter)
    parts = topic_filter.split("/", 2)
    if len(parts) != 3 or not parts[1] or any(c in parts[1] for c in "+#"):
        raise InvalidTopic(f"bad shared subscription {topic_filter!r}", 0x8F)
    return parts[1], validate_filter(parts[2])


def matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (no ``$share/`` prefix here)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True
        if i >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[i]:
            return False
    return len(filter_levels) == len(topic_levels)
