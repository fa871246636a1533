"""A synchronous paho-mqtt :class:`~smartlocker.cloud.downlink.Publisher` (for the API).

``PahoPublisher.from_url("mqtts://user:pass@host:8883")`` connects (MQTT 5, TLS for
``mqtts``), runs paho's network loop in its thread, and :meth:`publish` waits
for the broker's PUBACK at QoS 1 so that a caller knows the message left.
"""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .errors import CloudError, ConfigError

__all__ = ["MqttPublishError", "PahoPublisher"]

logger = logging.getLogger(__name__)


class MqttPublishError(CloudError, ConnectionError):
    """The broker could not be reached or did not acknowledge a publication."""

    type = "mqtt-unavailable"
    status = 503


class PahoPublisher:
    """Publishes signed downlink messages; one connection, thread-safe publish."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        client_id: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.timeout = timeout
        self._host, self._port = host, port
        self._connected = threading.Event()
        self._refused: ReasonCode | None = None
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"smartlocker-cloud-{uuid.uuid4().hex[:12]}",
            protocol=paho.MQTTv5,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set_context(tls)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._started = False

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> PahoPublisher:
        """From ``mqtt://`` or ``mqtts://[user:pass@]host[:port]`` (SMARTLOCKER_MQTT_URL)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"not an mqtt:// or mqtts:// URL: {url!r}")
        tls = ssl.create_default_context() if parts.scheme == "mqtts" else None
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise ConfigError(f"bad port in {url!r}") from exc
        return cls(
            parts.hostname,
            port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            **kwargs,
        )

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            self._refused = rc
            logger.error("MQTT connection refused: %s", rc)
        else:
            logger.info("MQTT publisher connected to %s:%d", self._host, self._port)
            self._connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self._connected.clear()
        logger.warning("MQTT publisher disconnected: %s", rc)

    def connect(self) -> Self:
        """Connect and wait for CONNACK; paho reconnects by itself afterwards."""
        try:
            self._client.connect(self._host, self._port, keepalive=30)
        except OSError as exc:
            self.close()
            raise MqttPublishError(f"cannot reach {self._host}:{self._port}: {exc}") from exc
        self._client.loop_start()
        self._started = True
        if not self._connected.wait(self.timeout) or self._refused is not None:
            reason = self._refused or "no CONNACK"
            self.close()
            raise MqttPublishError(f"MQTT connection to {self._host}:{self._port}: {reason}")
        return self

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Publish; at QoS 1 wait for the PUBACK. Raises :class:`MqttPublishError`."""
        self._publish(topic, payload, qos, retain, None)

    def publish_expiring(self, topic: str, payload: bytes, qos: int, expiry_s: int) -> None:
        """Publish (never retained) with an MQTT 5 message expiry interval.

        A broker that queues the message for an offline subscriber (a cabinet
        without power, its session kept) drops it once expired, by the broker's
        clock: a cabinet that comes back late never sees a stale command, whatever
        its own clock says.
        """
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.MessageExpiryInterval = max(1, expiry_s)
        self._publish(topic, payload, qos, False, props)

    def _publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, props: Properties | None
    ) -> None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise MqttPublishError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        if qos > 0:
            try:
                info.wait_for_publish(self.timeout)
            except (RuntimeError, ValueError) as exc:
                raise MqttPublishError(f"publish to {topic} failed: {exc}") from exc
            if not info.is_published():
                raise MqttPublishError(f"no PUBACK for {topic} within {self.timeout}s")

    def close(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False
        self._client._reset_sockets()  # paho leaves its wake-up socketpair to __del__

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
