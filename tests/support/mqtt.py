"""A small synchronous MQTT 5 client over paho for tests: every wait has a deadline.

Paho runs its network loop in a thread (``loop_start``); callbacks put CONNACK,
PUBACK, SUBACK reason codes and messages into queues the test reads with timeouts.
"""

from __future__ import annotations

import queue
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = [
    "NOT_AUTHORIZED",
    "MqttTestClient",
    "connected",
]

TIMEOUT = 5.0
NOT_AUTHORIZED = 0x87
BAD_USER_NAME_OR_PASSWORD = 0x86


class _TrackingContext(ssl.SSLContext):
    """Remembers its sockets: paho 2.2 leaks the one whose TLS handshake fails."""

    def __new__(cls, protocol: int) -> _TrackingContext:
        self = super().__new__(cls, protocol)
        self.opened = []
        return self

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        sock = super().wrap_socket(*args, **kwargs)
        self.opened.append(sock)
        return sock

    def close_all(self) -> None:
        for sock in self.opened:
            sock.close()
        self.opened.clear()


class MqttTestClient:
    """One MQTT 5 connection; ``connect()`` returns the CONNACK reason code."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ca: Path | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.client_id = client_id or f"test-{uuid.uuid4().hex[:12]}"
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._connack: queue.Queue[ReasonCode] = queue.Queue()
        self._acks: dict[int, Any] = {}
        self._acked = threading.Condition()
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
        )
        if username is not None:
            c.username_pw_set(username, password)
        self._tls: _TrackingContext | None = None
        if ca is not None:
            self._tls = _TrackingContext(ssl.PROTOCOL_TLS_CLIENT)
            self._tls.load_verify_locations(cafile=str(ca))
            c.tls_set_context(self._tls)
        # Paho sleeps its reconnect delay in whole uninterruptible seconds, which a
        # refused client's loop_stop() would wait out; test clients retry quickly.
        c.reconnect_delay_set(min_delay=0.05, max_delay=0.5)  # type: ignore[arg-type]
        c.on_connect = self._on_connect
        c.on_message = lambda _c, _u, msg: self.messages.put(msg)
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        self.paho = c
        self._started = False

    # -- callbacks (paho's thread) -----------------------------------------

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, rc: ReasonCode, _p: Any) -> None:
        self._connack.put(rc)

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        with self._acked:
            self._acks[mid] = rc
            self._acked.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, rcs: list[ReasonCode], _p: Any) -> None:
        with self._acked:
            self._acks[mid] = rcs
            self._acked.notify_all()

    def _wait_ack(self, mid: int, timeout: float) -> Any:
        with self._acked:
            if not self._acked.wait_for(lambda: mid in self._acks, timeout):
                raise AssertionError(f"{self.client_id}: no ack for mid {mid} within {timeout}s")
            return self._acks.pop(mid)

    # -- API (test thread) ---------------------------------------------------

    def connect(self, timeout: float = TIMEOUT, *, clean_start: bool = True) -> ReasonCode:
        """Connect and return the CONNACK reason code (success or refusal)."""
        props = Properties(paho.PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if clean_start else 3600
        try:
            self.paho.connect(
                self.host, self.port, keepalive=30, clean_start=clean_start, properties=props
            )
        except BaseException:
            if self._tls is not None:
                self._tls.close_all()
            raise
        self.paho.loop_start()
        self._started = True
        try:
            rc = self._connack.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no CONNACK within {timeout}s") from None
        if rc.is_failure:
            # Paho would retry in the background; a refused test client stays down.
            self.close()
        return rc

    def publish(
        self,
        topic: object,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float = TIMEOUT,
    ) -> ReasonCode | None:
        """Publish; for QoS 1 wait for the PUBACK and return its reason code."""
        info = self.paho.publish(str(topic), payload, qos=qos, retain=retain)
        assert info.rc == paho.MQTT_ERR_SUCCESS, paho.error_string(info.rc)
        if qos == 0:
            return None
        rc: ReasonCode = self._wait_ack(info.mid, timeout)
        return rc

    def subscribe(
        self, topic_filter: object, *, qos: int = 1, timeout: float = TIMEOUT
    ) -> ReasonCode:
        """Subscribe to one filter and return the SUBACK reason code."""
        rc, mid = self.paho.subscribe(str(topic_filter), qos=qos)
        assert rc == paho.MQTT_ERR_SUCCESS, paho.error_string(rc)
        (code,) = self._wait_ack(mid, timeout)
        return code

    def expect(self, timeout: float = TIMEOUT) -> paho.MQTTMessage:
        """The next received message; fails the test after ``timeout``."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message within {timeout}s") from None

    def close(self) -> None:
        """Disconnect, stop the loop thread and release every socket."""
        if self._started:
            self.paho.disconnect()
            self.paho.loop_stop()
            self._started = False
        self.paho._reset_sockets()  # paho leaves its wake-up socketpair to __del__

    def __enter__(self) -> MqttTestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def connected(host: str, port: int, **kwargs: Any) -> Iterator[MqttTestClient]:
    """A connected client (the test fails unless CONNACK is success), closed on exit."""
    client = MqttTestClient(host, port, **kwargs)
    try:
        rc = client.connect()
        assert not rc.is_failure, f"connect refused: {rc} ({rc.value:#x})"
        yield client
    finally:
        client.close()
