"""The embedded brokers' lifecycle (Mosquitto and the Python broker): state kept across
stop and start, lost on a kill, live provisioning."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from smartlocker.embedded import BrokerError, MosquittoBroker, PythonBroker
from smartlocker.protocol import Channel, TopicScheme
from tests.support.mqtt import NOT_AUTHORIZED, MqttTestClient, connected

SCHEME = TopicScheme("lockers")
STATUS = SCHEME.topic("cab-a", Channel.STATUS)


def _connected(broker, **kwargs):
    return connected(broker.host, broker.port, **kwargs)


def _publish_retained(broker, payload):
    with _connected(broker) as client:
        assert not client.publish(STATUS, payload, qos=1, retain=True).is_failure


@contextmanager
def _listener_on(port: int) -> Iterator[None]:
    """Someone else listening on ``port``: a port taken before a broker's first start."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        yield


def _retained_survives_a_restart(broker) -> None:
    _publish_retained(broker, b"here")
    broker.restart(timeout=5)
    with _connected(broker) as client:
        client.subscribe(STATUS)
        assert client.expect(10).payload == b"here"


def test_retained_message_survives_stop_and_start(any_fresh_broker):
    payload = uuid.uuid4().hex.encode()
    _publish_retained(any_fresh_broker, payload)
    any_fresh_broker.stop()
    assert not any_fresh_broker.running
    any_fresh_broker.start()
    with _connected(any_fresh_broker) as client:
        assert client.subscribe(STATUS).value == 1
        msg = client.expect()
        assert (msg.topic, msg.payload, msg.retain) == (str(STATUS), payload, True)


def test_persistent_session_survives_restart(any_fresh_broker):
    commands = SCHEME.topic("cab-a", Channel.COMMANDS)
    cabinet = MqttTestClient(any_fresh_broker.host, any_fresh_broker.port, client_id="cab-a")
    with cabinet:
        assert cabinet.connect(clean_start=False).value == 0
        assert cabinet.subscribe(commands, qos=1).value == 1
    with _connected(any_fresh_broker) as cloud:
        assert cloud.publish(commands, b"queued while offline", qos=1).value == 0  # 0x10 if lost
    any_fresh_broker.restart()
    cabinet = MqttTestClient(any_fresh_broker.host, any_fresh_broker.port, client_id="cab-a")
    with cabinet:
        assert cabinet.connect(clean_start=False).value == 0
        msg = cabinet.expect()
        assert (msg.topic, msg.payload) == (str(commands), b"queued while offline")


def test_kill_then_restart_keeps_the_port_and_loses_unsaved_state(any_fresh_broker):
    port, url = any_fresh_broker.port, any_fresh_broker.url
    _publish_retained(any_fresh_broker, b"never saved")
    any_fresh_broker.kill()
    assert not any_fresh_broker.running
    any_fresh_broker.restart()
    assert any_fresh_broker.running
    assert (any_fresh_broker.port, any_fresh_broker.url) == (port, url)
    with _connected(any_fresh_broker) as client:
        assert client.subscribe(STATUS).value == 1
        # SIGKILL gave mosquitto no chance to write its database: the retained
        # message is gone (a marker retained afterwards arrives first).
        assert client.publish(STATUS, b"marker", qos=1, retain=True).value == 0
        assert client.expect().payload == b"marker"


@pytest.mark.parametrize("kind", [MosquittoBroker, PythonBroker], ids=["mosquitto", "python"])
def test_add_user_provisions_a_cabinet_without_restart(tmp_path, kind):
    with kind(tmp_path, users={"cloud": "cloud-pw"}, cloud_users=["cloud"]) as broker:
        pid = broker.pid
        refused = MqttTestClient(broker.host, broker.port, username="cab-new", password="pw")
        with refused:
            assert refused.connect().value == NOT_AUTHORIZED
        broker.add_user("cab-new", "pw")
        assert broker.pid == pid
        with _connected(broker, username="cab-new", password="pw") as cabinet:
            own = SCHEME.topic("cab-new", Channel.EVENTS)
            other = SCHEME.topic("cab-a", Channel.EVENTS)
            assert not cabinet.publish(own, b"hello", qos=1).is_failure  # 0x10: nobody listens
            assert cabinet.publish(other, b"forged", qos=1).value == NOT_AUTHORIZED


def test_start_failure_reports_the_log(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = MosquittoBroker(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(BrokerError, match="Address already in use") as info:
            broker.start(timeout=5)
    assert not broker.running
    assert "exited" in str(info.value)


def test_a_port_of_our_choosing_taken_before_the_first_start_is_exchanged(tmp_path):
    """``free_port`` only finds a port free; another process may bind it first. Ports
    given by the caller, and ports once started on, are never changed."""
    broker = MosquittoBroker(tmp_path)
    taken = broker.port
    with _listener_on(taken):
        broker.start(timeout=5)
        try:
            assert broker.port != taken
            assert "Address already in use" in broker.log_tail()
            _retained_survives_a_restart(broker)
        finally:
            broker.stop()


def test_a_port_of_our_choosing_taken_before_the_python_brokers_first_start_is_exchanged(
    tmp_path, test_pki
):
    """As with Mosquitto (a CI run failed on it: between ``free_port`` and the bind,
    another process's connection had the port as its local one). Here the TLS port is
    taken: the plain listener the first try had bound lets go of its port, and both
    ports are exchanged; a restart keeps the new ones."""
    broker = PythonBroker(tmp_path, tls=test_pki.server)
    plain, taken = broker.port, broker.tls_port
    with _listener_on(taken):
        broker.start(timeout=5)
        try:
            assert broker.tls_port != taken
            if broker.port != plain:  # else the new listener bound it, which proves as much
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", plain))
            ports = (broker.port, broker.tls_port)
            _retained_survives_a_restart(broker)
            assert (broker.port, broker.tls_port) == ports
        finally:
            broker.stop()


def test_python_broker_start_failure_says_why(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = PythonBroker(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(BrokerError, match=r"(?i)address already in use"):
            broker.start(timeout=5)
    assert not broker.running
