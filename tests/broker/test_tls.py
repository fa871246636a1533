"""The TLS listener: clients that trust the test CA get in, others fail the handshake."""

from __future__ import annotations

import ssl
import uuid

import pytest

from smartlocker.protocol import Channel, TopicScheme
from tests.support.mqtt import MqttTestClient, connected

SCHEME = TopicScheme("lockers")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_with_the_right_ca(secure_broker, host):
    def login(name):
        return connected(
            host,
            secure_broker.tls_port,
            username=name,
            password=secure_broker.passwords[name],
            ca=secure_broker.ca,
        )

    topic, payload = SCHEME.topic("cab-a", Channel.EVENTS), uuid.uuid4().hex.encode()
    with login("cloud") as cloud, login("cab-a") as cabinet:
        assert cloud.subscribe(topic).value == 1
        assert cabinet.publish(topic, payload, qos=1).value == 0
        msg = cloud.expect()
        assert (msg.topic, msg.payload) == (str(topic), payload)


def test_tls_with_a_wrong_ca_fails(secure_broker):
    client = MqttTestClient(
        secure_broker.host,
        secure_broker.tls_port,
        username="cab-a",
        password=secure_broker.passwords["cab-a"],
        ca=secure_broker.wrong_ca,
    )
    with client, pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        client.connect()
