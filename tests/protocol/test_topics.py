"""Topics are values: built, parsed and matched; bad input is refused."""

from __future__ import annotations

import pytest
from hypothesis import given

from smartlocker.protocol import Channel, InvalidTopic, TopicFilter, TopicScheme

from .strategies import cabinet_ids

SCHEME = TopicScheme()


@given(cabinet_ids)
def test_every_topic_parses_back_to_itself(cabinet: str) -> None:
    for channel in Channel:
        topic = SCHEME.topic(cabinet, channel)
        assert str(topic) == f"lockers/{cabinet}/{channel.value}"
        assert SCHEME.parse(str(topic)) == topic
        assert SCHEME.all_cabinets(channel).matches(topic)


def test_contract_directions_qos_and_retain() -> None:
    uplink = {c for c in Channel if c.uplink}
    assert uplink == {"events", "telemetry", "status", "acks", "reported"}
    assert {c for c in Channel if c.retained} == {"status", "reported", "desired"}
    assert Channel.COMMANDS.qos == 1
    assert not Channel.COMMANDS.retained


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "lockers",
        "lockers/",
        "lockers/cab-1",
        "lockers/cab-1/",
        "lockers/cab-1/events/extra",
        "lockers/CAB-1/events",
        "lockers/-cab/events",
        "lockers/cab_1/events",
        "lockers/+/events",
        "lockers/#",
        "lockers/cab-1/unknown",
        "other/cab-1/events",
        "lockers//events",
        "lockers/" + "a" * 64 + "/events",
        "lockers/cab 1/events",
        "lockers/cäb/events",
    ],
)
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        SCHEME.parse(topic)


@pytest.mark.parametrize("cabinet", ["", "A", "-a", "a/b", "a+", "a#", "a" * 64, "ä"])
def test_bad_cabinet_ids_are_refused(cabinet: str) -> None:
    with pytest.raises(InvalidTopic):
        SCHEME.topic(cabinet, Channel.EVENTS)


@pytest.mark.parametrize("prefix", ["", "/", "a/", "/a", "a//b", "a/+", "#", "a b"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(InvalidTopic):
        TopicScheme(prefix)


@pytest.mark.parametrize(
    ("filter_", "topic", "expected"),
    [
        ("lockers/+/events", "lockers/cab-1/events", True),
        ("lockers/+/events", "lockers/cab-1/status", False),
        ("lockers/#", "lockers/cab-1/events", True),
        ("lockers/cab-1/#", "lockers/cab-1", True),
        ("#", "$SYS/broker/uptime", False),
        ("+/+/events", "lockers/cab-1/events", True),
        ("lockers/+", "lockers/cab-1/events", False),
    ],
)
def test_filter_matching(filter_: str, topic: str, expected: bool) -> None:
    assert TopicFilter(filter_).matches(topic) is expected


@pytest.mark.parametrize("filter_", ["", "a/#/b", "a/b#", "a/+b", "a/b+/c"])
def test_bad_filters_are_refused(filter_: str) -> None:
    with pytest.raises(InvalidTopic):
        TopicFilter(filter_)


def test_shared_subscription_for_ingest_workers() -> None:
    assert SCHEME.shared("ingest", Channel.EVENTS) == "$share/ingest/lockers/+/events"
    with pytest.raises(InvalidTopic):
        SCHEME.shared("bad/group", Channel.EVENTS)
