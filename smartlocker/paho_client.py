"""paho-mqtt's client, made to send from the publishing thread itself.

Neutral ground between the edge agent's link and the cloud's publisher. With a
network thread (``loop_start()``, or one's own calling ``loop()``), paho's
``publish()`` only queues the packet and wakes that thread, which then writes
it: one more thread hand-off (a wake-up, a scheduling delay, the GIL) before
every message leaves. :meth:`DirectClient.send_now` writes the queue at once
from the calling thread. paho's writes are not made for two threads at once (a
packet taken from the queue by one while the other puts back a partial write
would interleave their bytes), so every write, the network thread's included,
holds one lock. Over TLS (or websockets) nothing changes: an OpenSSL connection
must not be written by one thread while another reads it, so there the network
thread alone goes on touching the socket.
"""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

__all__ = ["DirectClient"]


class DirectClient(paho.Client):
    """A :class:`paho.mqtt.client.Client` whose queued packets any thread may send."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_lock = threading.Lock()

    def loop_write(self) -> MQTTErrorCode:
        """paho's write step (also the network thread's), one thread at a time."""
        with self._write_lock:
            return super().loop_write()

    def send_now(self) -> bool:
        """Write what is queued from this thread instead of waiting for the network
        thread (which, woken by ``publish()``, then finds nothing left to write);
        False if the connection is not a plain TCP socket (then it stays queued for
        the network thread). Errors are paho's to handle: a broken connection is the
        network thread's to notice and reconnect, and an unsent packet stays queued."""
        sock = self.socket()
        if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
            return False
        if self.want_write():
            self.loop_write()
        return True
