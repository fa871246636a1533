"""The API's MQTT publisher: cloud-core's :class:`~smartlocker.cloud.mqtt_publisher.PahoPublisher`,
started without blocking and able to say whether it is connected (for ``/readyz``).

A worker must boot even while the broker is down (gunicorn gives up on workers that
fail to boot): paho connects in the background and keeps reconnecting; until then
publishing raises :class:`~smartlocker.cloud.mqtt_publisher.MqttPublishError` (503).
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Self

from smartlocker.cloud.mqtt_publisher import MqttPublishError, PahoPublisher

__all__ = ["ApiPublisher", "MqttPublishError", "connect_publisher"]

logger = logging.getLogger(__name__)


class ApiPublisher(PahoPublisher):
    def start(self, wait: float = 5.0) -> Self:
        """Connect in the background; wait up to ``wait`` s for the first CONNACK."""
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_socket_open = _no_delay
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        self._started = True
        if not self._connected.wait(wait):
            logger.warning("MQTT %s:%d not connected yet; /readyz says so", self._host, self._port)
        return self

    def is_connected(self) -> bool:
        return self._connected.is_set()


def _no_delay(_client: Any, _userdata: Any, sock: Any) -> None:
    """Small packets leave at once: without TCP_NODELAY a PUBLISH can wait ~40 ms for
    the previous packet's delayed TCP ACK (Nagle), paho does not set it itself."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError) as exc:  # not a TCP socket (e.g. a websocket wrapper)
        logger.debug("TCP_NODELAY not set: %s", exc)


def connect_publisher(url: str, *, wait: float = 5.0, timeout: float = 5.0) -> ApiPublisher:
    """From ``SMARTLOCKER_MQTT_URL``; PUBACKs are awaited up to ``timeout`` s."""
    publisher = ApiPublisher.from_url(url, timeout=timeout)
    assert isinstance(publisher, ApiPublisher)
    return publisher.start(wait)
