"""The broker ACL of CONTRACT.md, checked against a real Mosquitto 2.0.11 and against
the in-process Python broker, which follows the same semantics.

What Mosquitto 2.0.11 does under MQTT 5, as observed and asserted here:
- a denied QoS 1 publish is answered with PUBACK "Not authorized" (0x87) and dropped;
- a subscription the ACL forbids is still granted (SUBACK QoS 1): the read ACL is
  applied to each message at delivery time, so the subscriber just receives nothing;
- a bad password, an unknown user and an anonymous client all get CONNACK
  "Not authorized" (0x87), not "Bad user name or password" (0x86).

"No delivery" is proven without sleeping: after the forbidden message, an allowed
marker follows on the same path; Mosquitto keeps one client's messages in order, so
the marker arriving first means the forbidden message was never delivered.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from smartlocker.protocol import Channel, TopicFilter, TopicScheme
from tests.support.mqtt import NOT_AUTHORIZED, MqttTestClient, connected

SCHEME = TopicScheme("lockers")
UPLINK = [c for c in Channel if c.uplink]
DOWNLINK = [c for c in Channel if not c.uplink]
ALL_CABINETS = TopicFilter(f"{SCHEME.prefix}/#")


def _payload() -> bytes:
    return uuid.uuid4().hex.encode()


@pytest.fixture
def cab_a(any_secure_broker) -> Iterator[MqttTestClient]:
    with connected(
        any_secure_broker.host,
        any_secure_broker.port,
        username="cab-a",
        password=any_secure_broker.passwords["cab-a"],
    ) as client:
        yield client


@pytest.fixture
def cloud(any_secure_broker) -> Iterator[MqttTestClient]:
    """The cloud account, subscribed to everything under the prefix."""
    with connected(
        any_secure_broker.host,
        any_secure_broker.port,
        username="cloud",
        password=any_secure_broker.passwords["cloud"],
    ) as client:
        assert client.subscribe(ALL_CABINETS).value == 1
        yield client


def _expect_marker(client: MqttTestClient, topic: object, payload: bytes) -> None:
    msg = client.expect()
    assert (msg.topic, msg.payload) == (str(topic), payload), "a forbidden message got through"


# -- what a cabinet may do ---------------------------------------------------------


@pytest.mark.parametrize("channel", UPLINK, ids=str)
def test_cabinet_publishes_its_own_uplink(cab_a, cloud, channel):
    topic = SCHEME.topic("cab-a", channel)
    payload = _payload()
    assert cab_a.publish(topic, payload, qos=1).value == 0
    msg = cloud.expect()
    assert (msg.topic, msg.payload) == (str(topic), payload)


@pytest.mark.parametrize("channel", DOWNLINK, ids=str)
def test_cabinet_reads_its_own_downlink(cab_a, cloud, channel):
    topic = SCHEME.topic("cab-a", channel)
    assert cab_a.subscribe(topic, qos=1).value == 1
    payload = _payload()
    assert cloud.publish(topic, payload, qos=1).value == 0
    msg = cab_a.expect()
    assert (msg.topic, msg.payload, msg.qos) == (str(topic), payload, 1)


# -- what a cabinet may not do ---------------------------------------------------------

FORBIDDEN_PUBLISH = [("cab-b", c) for c in Channel] + [("cab-a", c) for c in DOWNLINK]


@pytest.mark.parametrize(
    ("cabinet", "channel"), FORBIDDEN_PUBLISH, ids=[f"{c}/{ch}" for c, ch in FORBIDDEN_PUBLISH]
)
def test_cabinet_publish_elsewhere_is_refused(cab_a, cloud, cabinet, channel):
    forbidden = SCHEME.topic(cabinet, channel)
    rc = cab_a.publish(forbidden, b"forged", qos=1)
    assert rc.value == NOT_AUTHORIZED, f"PUBACK {rc}"
    marker, payload = SCHEME.topic("cab-a", Channel.EVENTS), _payload()
    assert cab_a.publish(marker, payload, qos=1).value == 0
    _expect_marker(cloud, marker, payload)


def test_cabinet_qos0_publish_elsewhere_is_dropped(cab_a, cloud):
    # QoS 0 has no PUBACK: the only evidence is that nothing is delivered.
    cab_a.publish(SCHEME.topic("cab-b", Channel.TELEMETRY), b"forged", qos=0)
    marker, payload = SCHEME.topic("cab-a", Channel.TELEMETRY), _payload()
    assert cab_a.publish(marker, payload, qos=1).value == 0
    _expect_marker(cloud, marker, payload)


FORBIDDEN_SUBSCRIBE = [
    # (filter, topics the cloud publishes that the cabinet must not see)
    *[(str(SCHEME.topic("cab-b", c)), [SCHEME.topic("cab-b", c)]) for c in DOWNLINK],
    (str(SCHEME.all_cabinets(Channel.COMMANDS)), [SCHEME.topic("cab-b", Channel.COMMANDS)]),
    (
        str(ALL_CABINETS),
        [SCHEME.topic("cab-b", c) for c in Channel] + [SCHEME.topic("cab-a", c) for c in UPLINK],
    ),
]


@pytest.mark.parametrize(
    ("topic_filter", "forbidden"), FORBIDDEN_SUBSCRIBE, ids=[f for f, _ in FORBIDDEN_SUBSCRIBE]
)
def test_cabinet_cannot_read_elsewhere(any_secure_broker, cab_a, topic_filter, forbidden):
    # Mosquitto 2.0.11 grants the subscription (SUBACK QoS 1, not 0x87) and applies
    # the read ACL to every message instead.
    assert cab_a.subscribe(topic_filter, qos=1).value == 1
    marker = SCHEME.topic("cab-a", Channel.COMMANDS)
    if not TopicFilter(topic_filter).matches(marker):
        assert cab_a.subscribe(marker, qos=1).value == 1
    with connected(
        any_secure_broker.host,
        any_secure_broker.port,
        username="cloud",
        password=any_secure_broker.passwords["cloud"],
    ) as cloud:
        for topic in forbidden:
            assert cloud.publish(topic, b"not for cab-a", qos=1).value == 0
        payload = _payload()
        assert cloud.publish(marker, payload, qos=1).value == 0
    _expect_marker(cab_a, marker, payload)


def test_cloud_reads_a_shared_subscription(any_secure_broker, cab_a):
    # Ingest workers split the stream with $share; the cloud ACL must allow it.
    with connected(
        any_secure_broker.host,
        any_secure_broker.port,
        username="cloud",
        password=any_secure_broker.passwords["cloud"],
    ) as cloud:
        assert cloud.subscribe(SCHEME.shared("ingest", Channel.EVENTS), qos=1).value == 1
        topic, payload = SCHEME.topic("cab-a", Channel.EVENTS), _payload()
        assert cab_a.publish(topic, payload, qos=1).value == 0
        _expect_marker(cloud, topic, payload)


# -- who may connect ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password"),
    [(None, None), ("cab-a", "wrong-password"), ("cab-a", ""), ("cab-z", "whatever")],
    ids=["anonymous", "wrong-password", "empty-password", "unknown-user"],
)
def test_connect_without_valid_credentials_is_refused(any_secure_broker, username, password):
    client = MqttTestClient(
        any_secure_broker.host, any_secure_broker.port, username=username, password=password
    )
    with client:
        rc = client.connect()
    # Mosquitto 2.0.11 answers every failed login with 0x87, never 0x86.
    assert rc.value == NOT_AUTHORIZED, f"CONNACK {rc}"
