"""Topic names, filters, ``$share`` and matching (MQTT 5 §4.7-4.8)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartlocker.embedded.pybroker.topics import (
    InvalidTopic,
    matches,
    split_shared,
    validate_filter,
    validate_topic,
)

MATCHES = [
    ("lockers/+/events", "lockers/cab-a/events", True),
    ("lockers/+/events", "lockers/cab-a/status", False),
    ("lockers/+/events", "lockers/events", False),
    ("lockers/#", "lockers", True),
    ("lockers/#", "lockers/a/b/c", True),
    ("#", "lockers/a", True),
    ("+", "a", True),
    ("+", "a/b", False),
    ("+/+", "/a", True),
    ("a/+", "a/", True),
    ("#", "$SYS/broker", False),
    ("+/broker", "$SYS/broker", False),
    ("$SYS/#", "$SYS/broker", True),
    ("a/b", "a/b/", False),
    ("A/b", "a/b", False),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCHES)
def test_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected


BAD_FILTERS = ["", "a/#/b", "a#", "a/b+", "+a", "#/"]


@pytest.mark.parametrize("topic_filter", BAD_FILTERS)
def test_bad_filters(topic_filter: str) -> None:
    with pytest.raises(InvalidTopic) as info:
        validate_filter(topic_filter)
    assert info.value.reason_code == 0x8F


@pytest.mark.parametrize("topic", ["", "a/+", "a/#", "#"])
def test_bad_topic_names(topic: str) -> None:
    with pytest.raises(InvalidTopic) as info:
        validate_topic(topic)
    assert info.value.reason_code == 0x90


def test_shared_subscriptions() -> None:
    assert split_shared("$share/ingest/lockers/+/events") == ("ingest", "lockers/+/events")
    assert split_shared("lockers/#") == (None, "lockers/#")
    for bad in ("$share/ingest", "$share//a", "$share/g+/a", "$share/g/a/#/b"):
        with pytest.raises(InvalidTopic):
            split_shared(bad)


levels = st.lists(st.text("ab$", min_size=0, max_size=3), min_size=1, max_size=4)


@given(levels)
def test_a_topic_matches_itself_and_hash_matches_all_but_dollar(parts: list[str]) -> None:
    topic = "/".join(parts)
    assert matches(topic, topic)
    assert matches("#", topic) is (not topic.startswith("$"))
    assert matches("/".join("+" for _ in parts), topic) is (not topic.startswith("$"))
