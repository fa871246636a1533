"""DirectClient: queued packets leave from the publishing thread, intact under load,
and never over TLS (OpenSSL must not be written while another thread reads)."""

from __future__ import annotations

import ssl
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from smartlocker.embedded import MosquittoBroker
from smartlocker.paho_client import DirectClient
from tests.fix_mqtt import CLOUD_USER, SecureBroker


def _listener(broker: MosquittoBroker, topic: str) -> tuple[paho.Client, list[bytes]]:
    received: list[bytes] = []
    done = threading.Event()
    listener = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"listen-{topic}")
    listener.on_message = lambda _c, _u, msg: received.append(bytes(msg.payload))
    listener.on_subscribe = lambda *_: done.set()
    listener.connect(broker.host, broker.port)
    listener.subscribe(topic, qos=1)
    listener.loop_start()
    assert done.wait(5)
    return listener, received


def _until(predicate: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


def test_send_now_writes_from_the_calling_thread(mqtt_broker: MosquittoBroker) -> None:
    listener, received = _listener(mqtt_broker, "direct/one")
    client = DirectClient(CallbackAPIVersion.VERSION2, client_id="direct-one")
    # As the agent's link does: publish() only queues; nobody runs the network loop
    # after the CONNACK, so only send_now() can put the packet on the wire.
    client.on_socket_register_write = lambda *_: None
    try:
        client.connect(mqtt_broker.host, mqtt_broker.port)
        for _ in range(20):
            client.loop(0.1)
            if client.is_connected():
                break
        assert client.is_connected()
        client.publish("direct/one", b"queued", qos=0)
        assert client.want_write()
        time.sleep(0.2)
        assert received == []
        assert client.send_now() is True
        assert not client.want_write()
        _until(lambda: received)
        assert received == [b"queued"]
    finally:
        client.disconnect()
        client._reset_sockets()
        listener.loop_stop()
        listener.disconnect()


def test_threads_publishing_at_once_with_the_network_thread_lose_and_mix_nothing(
    mqtt_broker: MosquittoBroker,
) -> None:
    threads, each = 8, 150
    listener, received = _listener(mqtt_broker, "direct/many")
    client = DirectClient(CallbackAPIVersion.VERSION2, client_id="direct-many")
    client.max_inflight_messages_set(0)  # no limit: PUBACKs and writes interleave freely
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.loop_start()
    try:
        _until(client.is_connected)

        def publisher(n: int) -> None:
            for i in range(each):
                payload = f"{n}:{i}:".encode() + b"x" * (i * 37 % 3000)
                info = client.publish("direct/many", payload, qos=1)
                client.send_now()
                if i % 50 == 49:
                    info.wait_for_publish(10)

        workers = [threading.Thread(target=publisher, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        _until(lambda: len(received) >= threads * each, 20)
    finally:
        client.disconnect()
        client.loop_stop()
        listener.loop_stop()
        listener.disconnect()
    assert len(received) == threads * each
    for n in range(threads):
        mine = [m for m in received if m.startswith(f"{n}:".encode())]
        # every one, whole, in its thread's order
        assert mine == [f"{n}:{i}:".encode() + b"x" * (i * 37 % 3000) for i in range(each)]


def test_over_tls_the_network_thread_alone_writes(secure_broker: SecureBroker) -> None:
    client = DirectClient(CallbackAPIVersion.VERSION2, client_id="direct-tls")
    client.username_pw_set(CLOUD_USER, secure_broker.passwords[CLOUD_USER])
    client.tls_set_context(ssl.create_default_context(cafile=str(secure_broker.ca)))
    client.connect("127.0.0.1", secure_broker.tls_port)
    client.loop_start()
    try:
        _until(client.is_connected)
        assert client.is_connected()
        info = client.publish("direct/tls", b"over tls", qos=1)
        assert client.send_now() is False
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()
