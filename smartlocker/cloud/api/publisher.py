"""The API's MQTT publisher (paho): signed commands and desired states go out here.

It implements :class:`smartlocker.cloud.downlink.Publisher`. ``publish`` waits for
the broker's PUBACK (QoS 1), so a 202 means the broker holds the command.
"""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["PahoPublisher", "PublishError", "connect_publisher"]

logger = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """The broker did not take the message (not connected, or no PUBACK in time)."""


class PahoPublisher:
    """One MQTT connection with paho's network thread; thread-safe ``publish``."""

    def __init__(self, client: paho.Client, *, timeout: float = 5.0) -> None:
        self._client = client
        self._timeout = timeout
        self._connected = threading.Event()
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if not rc.is_failure:
            self._connected.set()
        else:
            logger.error("MQTT connection refused: %s", rc)

    def _on_disconnect(self, *_args: Any) -> None:
        self._connected.clear()
        logger.warning("MQTT connection lost; paho reconnects")

    def is_connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise PublishError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        if qos > 0:
            try:
                info.wait_for_publish(self._timeout)
            except (RuntimeError, ValueError) as exc:
                raise PublishError(f"publish to {topic} failed: {exc}") from exc
            if not info.is_published():
                raise PublishError(f"no PUBACK for {topic} within {self._timeout}s")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def connect_publisher(
    url: str, *, client_id: str | None = None, timeout: float = 5.0
) -> PahoPublisher:
    """Connect to ``mqtt://`` or ``mqtts://user:pass@host:port`` and start the network thread."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"SMARTLOCKER_MQTT_URL must be mqtt:// or mqtts://, got {url!r}")
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"smartlocker-api-{uuid.uuid4().hex[:12]}",
        protocol=paho.MQTTv5,
    )
    if parts.username:
        client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
    if parts.scheme == "mqtts":
        client.tls_set_context(ssl.create_default_context())
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    publisher = PahoPublisher(client, timeout=timeout)
    client.connect_async(parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883))
    client.loop_start()
    if not publisher.wait_connected(timeout):
        logger.warning("MQTT %s not connected yet; /readyz says so until it is", parts.hostname)
    return publisher
