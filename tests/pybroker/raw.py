"""A blocking raw MQTT client over the broker's own codec: exact packets, exact answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from smartlocker.embedded.pybroker.codec import (
    Framer,
    decode,
    encode,
)
from smartlocker.embedded.pybroker.packets import (
    MQTT_5,
    Connack,
    Connect,
    Packet,
)

TIMEOUT = 5.0


class RawClient:
    """Send packets (or bytes), read decoded packets; every read has a deadline."""

    def __init__(self, host: str, port: int, version: int = MQTT_5) -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.version = version
        self._framer = Framer()
        self._ready: list[Packet] = []

    def send(self, packet: Packet) -> None:
        self.sock.sendall(encode(packet, self.version))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float = TIMEOUT) -> Packet:
        self.sock.settimeout(timeout)
        while not self._ready:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the broker")
            for first, body in self._framer.feed(data):
                self._ready.append(decode(first, body, self.version))
        return self._ready.pop(0)

    def closed(self, timeout: float = TIMEOUT) -> bool:
        """Whether the broker closes the connection (after any packets still in flight)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def connect(self, connect: Connect) -> Connack:
        self.send(connect)
        ack = self.read()
        assert isinstance(ack, Connack), ack
        return ack

    def close(self) -> None:
        self.sock.close()


@contextmanager
def raw_client(host: str, port: int, version: int = MQTT_5) -> Iterator[RawClient]:
    client = RawClient(host, port, version)
    try:
        yield client
    finally:
        client.close()
