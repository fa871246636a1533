"""The Python broker with the project's clients (paho MQTT 5, gmqtt) and raw packets:
wills, keepalive, persistent sessions, takeover, $share, manual acks, limits, bad input."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import gmqtt
import pytest

from smartlocker.embedded import PythonBroker
from smartlocker.embedded.pybroker.codec import encode
from smartlocker.embedded.pybroker.packets import (
    MQTT_311,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    Prop,
    Puback,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Will,
)
from tests.pybroker.raw import raw_client
from tests.support.mqtt import MqttTestClient, connected


def _topic() -> str:
    return f"lockers/{uuid.uuid4().hex[:8]}/status"


def _session(client_id: str, expiry: int = 60, **kw) -> Connect:
    return Connect(
        client_id, clean_start=False, properties={Prop.SESSION_EXPIRY_INTERVAL: expiry}, **kw
    )


# -- wills and keepalive --------------------------------------------------------------


def test_will_goes_out_when_the_client_socket_dies(pybroker: PythonBroker) -> None:
    topic = _topic()
    with connected(pybroker.host, pybroker.port) as watcher:
        assert watcher.subscribe(topic).value == 1
        cabinet = MqttTestClient(pybroker.host, pybroker.port)
        cabinet.paho.will_set(topic, b"offline", qos=1, retain=True)
        with cabinet:
            assert cabinet.connect().value == 0
            cabinet.paho.socket().shutdown(socket.SHUT_RDWR)  # power cut
            msg = watcher.expect()
            assert (msg.topic, msg.payload) == (topic, b"offline")
    with connected(pybroker.host, pybroker.port) as late:
        assert late.subscribe(topic).value == 1
        msg = late.expect()
        assert (msg.payload, msg.retain) == (b"offline", True)


def test_no_will_after_a_normal_disconnect(pybroker: PythonBroker) -> None:
    topic = _topic()
    with connected(pybroker.host, pybroker.port) as watcher:
        assert watcher.subscribe(topic).value == 1
        with raw_client(pybroker.host, pybroker.port) as raw:
            raw.connect(Connect("polite", will=Will(topic, b"gone", 1)))
            raw.send(Disconnect(0))
            assert raw.closed()
        assert watcher.publish(topic, b"marker").value == 0
        assert watcher.expect().payload == b"marker"


def test_keepalive_timeout_disconnects_and_sends_the_will(pybroker: PythonBroker) -> None:
    topic = _topic()
    with connected(pybroker.host, pybroker.port) as watcher:
        assert watcher.subscribe(topic).value == 1
        with raw_client(pybroker.host, pybroker.port) as raw:
            raw.connect(Connect("sleepy", keepalive=1, will=Will(topic, b"timed out", 1)))
            raw.send(Pingreq())
            assert raw.read() == Pingresp()
            assert raw.read(timeout=4) == Disconnect(0x8D)  # silent for 1.5 keepalives
            assert raw.closed()
        assert watcher.expect().payload == b"timed out"


# -- persistent sessions and takeover ------------------------------------------------------


def test_unacked_and_queued_qos1_are_redelivered_after_reconnect(pybroker: PythonBroker) -> None:
    topic = _topic()
    with raw_client(pybroker.host, pybroker.port) as raw:
        assert not raw.connect(_session("ingest-1")).session_present
        raw.send(Subscribe(1, (Subscription(topic, 1),)))
        assert raw.read() == Suback(1, (1,))
        with connected(pybroker.host, pybroker.port) as cloud:
            assert cloud.publish(topic, b"first").value == 0
            first = raw.read()
            assert isinstance(first, Publish)
            assert (first.payload, first.dup) == (b"first", False)
            raw.sock.close()  # gone without a PUBACK
            _wait_offline(pybroker, "ingest-1")
            assert cloud.publish(topic, b"second").value == 0  # queued for the session
    with raw_client(pybroker.host, pybroker.port) as raw:
        assert raw.connect(_session("ingest-1")).session_present
        again, second = raw.read(), raw.read()
        assert isinstance(again, Publish)
        assert isinstance(second, Publish)
        assert (again.payload, again.dup, again.packet_id) == (b"first", True, first.packet_id)
        assert (second.payload, second.dup) == (b"second", False)
        raw.send(Puback(again.packet_id or 0))
        raw.send(Puback(second.packet_id or 0))
        raw.send(Disconnect(0, {Prop.SESSION_EXPIRY_INTERVAL: 0}))  # and forget me
        assert raw.closed()
    with raw_client(pybroker.host, pybroker.port) as raw:
        assert not raw.connect(_session("ingest-1")).session_present


def test_a_command_that_expired_while_the_cabinet_was_away_is_never_delivered(
    pybroker: PythonBroker,
) -> None:
    """The cloud's commands carry a Message Expiry Interval: a cabinet back late gets
    only what still has time left, and that with the time it has left."""
    topic = _topic()
    with raw_client(pybroker.host, pybroker.port) as cabinet:
        assert not cabinet.connect(_session("cab-expiry")).session_present
        cabinet.send(Subscribe(1, (Subscription(topic, 1),)))
        assert cabinet.read() == Suback(1, (1,))
        cabinet.sock.close()  # power cut
        _wait_offline(pybroker, "cab-expiry")
    with raw_client(pybroker.host, pybroker.port) as cloud:
        cloud.connect(Connect("cloud-expiry"))
        for packet_id, (payload, ttl) in enumerate([(b"short", 1), (b"long", 60)], start=1):
            props = {Prop.MESSAGE_EXPIRY_INTERVAL: ttl}
            cloud.send(Publish(topic, payload, qos=1, packet_id=packet_id, properties=props))
            assert cloud.read() == Puback(packet_id, 0)
    time.sleep(1.2)
    with raw_client(pybroker.host, pybroker.port) as cabinet:
        assert cabinet.connect(_session("cab-expiry")).session_present
        got = cabinet.read()
        assert isinstance(got, Publish)
        assert got.payload == b"long"
        assert 0 < got.properties[Prop.MESSAGE_EXPIRY_INTERVAL] <= 59
        cabinet.send(Puback(got.packet_id or 0))
        with pytest.raises(TimeoutError):
            cabinet.read(timeout=0.3)


def _wait_offline(broker: PythonBroker, client_id: str) -> None:
    """Until the broker has seen the connection go (not just the client closing it)."""
    deadline = time.monotonic() + 5
    while broker._state is not None and broker._state.sessions[client_id].online:
        assert time.monotonic() < deadline, f"{client_id} still online"
        time.sleep(0.01)


def _wait_subscribed(broker: PythonBroker, client_id: str, topic_filter: str) -> None:
    """Until the broker has the subscription (gmqtt's subscribe does not wait for SUBACK)."""
    deadline = time.monotonic() + 5
    while True:
        session = broker._state.sessions.get(client_id) if broker._state else None
        if session is not None and topic_filter in session.subscriptions:
            return
        assert time.monotonic() < deadline, f"{client_id} not subscribed to {topic_filter}"
        time.sleep(0.01)


def test_same_client_id_takes_the_session_over(pybroker: PythonBroker) -> None:
    topic = _topic()
    with connected(pybroker.host, pybroker.port) as watcher:
        assert watcher.subscribe(topic).value == 1
        with raw_client(pybroker.host, pybroker.port) as old:
            old.connect(_session("cab-x", will=Will(topic, b"old one gone", 1)))
            with raw_client(pybroker.host, pybroker.port) as new:
                assert new.connect(_session("cab-x")).session_present
                assert old.read() == Disconnect(0x8E)
                assert old.closed()
        assert watcher.expect().payload == b"old one gone"


# -- gmqtt: $share and the manual PUBACK of ingest ----------------------------------------


async def _gmqtt(
    broker: PythonBroker, client_id: str, inbox: list[bytes], *, ack: asyncio.Event | None = None
) -> gmqtt.Client:
    client = gmqtt.Client(
        client_id,
        clean_session=False,
        session_expiry_interval=600,
        optimistic_acknowledgement=ack is None,
    )

    async def on_message(_c, _topic, payload, _qos, _props):
        inbox.append(payload)
        if ack is not None:
            await ack.wait()  # the PUBACK goes out only once this returns (after "commit")
        return 0

    client.on_message = on_message
    await client.connect(broker.host, broker.port)
    return client


def test_shared_subscription_splits_the_stream_round_robin(pybroker: PythonBroker) -> None:
    async def main() -> tuple[list[bytes], list[bytes]]:
        a, b = [], []
        ca = await _gmqtt(pybroker, "ingest-a", a)
        cb = await _gmqtt(pybroker, "ingest-b", b)
        shared = "$share/ingest/lockers/+/events"
        for c in (ca, cb):
            c.subscribe(gmqtt.Subscription(shared, qos=1))
        for name in ("ingest-a", "ingest-b"):
            await asyncio.to_thread(_wait_subscribed, pybroker, name, shared)
        with connected(pybroker.host, pybroker.port) as cabinet:
            for i in range(10):
                assert cabinet.publish(f"lockers/cab-{i}/events", str(i).encode()).value == 0
        for _ in range(100):
            if len(a) + len(b) == 10:
                break
            await asyncio.sleep(0.05)
        for c in (ca, cb):
            await c.disconnect(session_expiry_interval=0)
        return a, b

    a, b = asyncio.run(main())
    assert (len(a), len(b)) == (5, 5)
    assert sorted(int(x) for x in a + b) == list(range(10))


def test_gmqtt_manual_ack_after_commit_and_redelivery_without_it(pybroker: PythonBroker) -> None:
    topic = "lockers/cab-m/events"

    async def main() -> tuple[list[bytes], list[bytes]]:
        first, second = [], []
        held = asyncio.Event()  # never set: the first worker dies before its commit
        c1 = await _gmqtt(pybroker, "ingest-m", first, ack=held)
        c1.subscribe(gmqtt.Subscription(f"$share/ingest/{topic}", qos=1))
        await asyncio.to_thread(_wait_subscribed, pybroker, "ingest-m", f"$share/ingest/{topic}")
        with connected(pybroker.host, pybroker.port) as cabinet:
            assert cabinet.publish(topic, b"event-1").value == 0
        for _ in range(100):
            if first:
                break
            await asyncio.sleep(0.05)
        # The worker crashes: no PUBACK, no DISCONNECT, and it does not come back.
        c1._is_active = False  # gmqtt would otherwise reconnect and take the session back
        c1._connection._transport.abort()
        await asyncio.to_thread(_wait_offline, pybroker, "ingest-m")
        committed = asyncio.Event()
        committed.set()
        c2 = await _gmqtt(pybroker, "ingest-m", second, ack=committed)
        for _ in range(100):
            if second:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        await c2.disconnect(session_expiry_interval=0)
        return first, second

    first, second = asyncio.run(main())
    assert first == [b"event-1"]
    assert second == [b"event-1"]  # redelivered to the session, once acked: gone
    assert "ingest-m" not in pybroker._state.sessions  # type: ignore[union-attr]


# -- limits and bad input ------------------------------------------------------------------


def test_receive_maximum_of_the_client_is_honoured(pybroker: PythonBroker) -> None:
    topic = _topic()
    with raw_client(pybroker.host, pybroker.port) as raw:
        raw.connect(Connect("slow", properties={Prop.RECEIVE_MAXIMUM: 2}))
        raw.send(Subscribe(1, (Subscription(topic, 1),)))
        raw.read()
        with connected(pybroker.host, pybroker.port) as cloud:
            for i in range(4):
                assert cloud.publish(topic, str(i).encode()).value == 0
        got = [raw.read(), raw.read()]
        with pytest.raises(TimeoutError):
            raw.read(timeout=0.3)
        raw.send(Puback(got[0].packet_id))  # type: ignore[union-attr]
        third = raw.read()
        assert isinstance(third, Publish)
        assert third.payload == b"2"


def test_oversize_packet_is_refused_with_0x95(fresh_pybroker: PythonBroker) -> None:
    with raw_client(fresh_pybroker.host, fresh_pybroker.port) as raw:
        ack = raw.connect(Connect("big"))
        assert ack.properties[Prop.MAXIMUM_PACKET_SIZE] == 4096
        raw.send(Publish("a/b", b"x" * 5000, 1, packet_id=1))
        assert raw.read() == Disconnect(0x95)
        assert raw.closed()


BAD = [
    ("garbage first", b"\xff\xff\xff\xff\xff", None),
    ("publish before connect", b"\x30\x04\x00\x01a\x00", None),
    ("qos 2", b"\x34\x06\x00\x01a\x00\x01\x00", 0x9B),
    ("topic alias", b"\x32\x09\x00\x01a\x00\x01\x03\x23\x00\x01", 0x94),
    ("wildcard topic", b"\x32\x06\x00\x01#\x00\x01\x00", 0x90),
    ("malformed utf-8", b"\x30\x05\x00\x02\xc3\x28\x00", 0x81),
    ("second connect", None, 0x82),
    ("pubrel without qos 2", b"\x62\x02\x00\x01", 0x82),
    ("auth without a method", b"\xf0\x00", 0x82),
]


@pytest.mark.parametrize(("why", "data", "reason"), BAD, ids=[b[0] for b in BAD])
def test_malformed_input_ends_only_that_connection(
    pybroker: PythonBroker, why: str, data: bytes | None, reason: int | None
) -> None:
    with raw_client(pybroker.host, pybroker.port) as raw:
        if reason is not None:
            raw.connect(Connect(f"bad-{uuid.uuid4().hex[:6]}"))
        raw.send_bytes(data if data is not None else _connect_bytes())
        if reason is not None:
            assert raw.read() == Disconnect(reason)
        assert raw.closed()
    with connected(pybroker.host, pybroker.port) as fine:  # and the broker serves on
        assert fine.subscribe("still/here").value == 1


def _connect_bytes() -> bytes:

    return encode(Connect("again"))


def test_mqtt_311_client(pybroker: PythonBroker) -> None:
    topic = _topic()
    with raw_client(pybroker.host, pybroker.port, MQTT_311) as raw:
        assert raw.connect(Connect("old", protocol_version=MQTT_311)).reason_code == 0
        raw.send(Subscribe(1, (Subscription(topic, 1),)))
        assert raw.read() == Suback(1, (1,))
        raw.send(Publish(topic, b"hi", 1, packet_id=7))
        packets = [raw.read(), raw.read()]
        assert Puback(7) in packets
        assert any(isinstance(p, Publish) and p.payload == b"hi" for p in packets)


def test_unsupported_protocol_gets_connack_0x01(pybroker: PythonBroker) -> None:
    with raw_client(pybroker.host, pybroker.port, MQTT_311) as raw:
        raw.send_bytes(b"\x10\x0d\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x00")
        ack = raw.read()
        assert ack.reason_code == 1  # type: ignore[union-attr]
        assert raw.closed()


def test_qos2_subscription_is_granted_qos1_and_a_bad_filter_refused(pybroker: PythonBroker) -> None:
    with raw_client(pybroker.host, pybroker.port) as raw:
        raw.connect(Connect("greedy"))
        raw.send(Subscribe(3, (Subscription("a/b", 2), Subscription("a/#/b", 1))))
        assert raw.read() == Suback(3, (1, 0x8F))
