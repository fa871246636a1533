"""The TLS listener (Mosquitto's and the Python broker's): clients that trust the test CA
get in, others fail the handshake."""

from __future__ import annotations

import ssl
import uuid

import pytest

from smartlocker.protocol import Channel, TopicScheme
from tests.support.mqtt import MqttTestClient, connected

SCHEME = TopicScheme("lockers")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_with_the_right_ca(any_secure_broker, host):
    def login(name):
        return connected(
            host,
            any_secure_broker.tls_port,
            username=name,
            password=any_secure_broker.passwords[name],
            ca=any_secure_broker.ca,
        )

    topic, payload = SCHEME.topic("cab-a", Channel.EVENTS), uuid.uuid4().hex.encode()
    with login("cloud") as cloud, login("cab-a") as cabinet:
        assert cloud.subscribe(topic).value == 1
        assert cabinet.publish(topic, payload, qos=1).value == 0
        msg = cloud.expect()
        assert (msg.topic, msg.payload) == (str(topic), payload)


def test_tls_with_a_wrong_ca_fails(any_secure_broker):
    client = MqttTestClient(
        any_secure_broker.host,
        any_secure_broker.tls_port,
        username="cab-a",
        password=any_secure_broker.passwords["cab-a"],
        ca=any_secure_broker.wrong_ca,
    )
    with client, pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        client.connect()
