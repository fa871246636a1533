"""A TCP proxy between a client and a server that can stop the client's bytes.

To put a client in the state "it sent this, the server never got it" on demand:
while :meth:`TcpProxy.hold` is on, what the client sends is kept back (and dropped
with the connection), while the server's bytes still reach the client. E.g. an
ingest worker that committed an ack and wrote its PUBACK, which the broker never
sees, as if the worker had been killed between its commit and its PUBACK.

With ``server_chunks=(lo, hi)`` the server's bytes reach the client in pieces of
``lo``..``hi`` bytes, each sent alone (TCP_NODELAY) after a short pause, so the
client's reads end inside packets (e.g. inside an MQTT remaining-length varint).
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time

__all__ = ["TcpProxy"]


class TcpProxy:
    def __init__(
        self, target_host: str, target_port: int, *, server_chunks: tuple[int, int] | None = None
    ) -> None:
        self._target = (target_host, target_port)
        self._chunks = server_chunks
        #: Pieces the server's bytes were cut into (with ``server_chunks``).
        self.pieces = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._server.getsockname()[:2]
        self._hold = threading.Event()
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        #: Bytes from clients kept back while holding (never forwarded).
        self.held = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self, on: bool = True) -> None:
        """Keep back (``on``) or forward what clients send from now on."""
        if on:
            self._hold.set()
        else:
            self._hold.clear()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            # A connection's end (reset, closed by the other side or by close()) ends it.
            with contextlib.suppress(OSError):
                self._forward(src, dst, from_client)
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _forward(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        while data := src.recv(65536):
            if from_client and self._hold.is_set():
                self.held += len(data)
                continue
            if from_client or self._chunks is None:
                dst.sendall(data)
                continue
            lo, hi = self._chunks
            at = 0
            while at < len(data):
                size = random.randint(lo, hi)
                dst.sendall(data[at : at + size])
                at += size
                self.pieces += 1
                time.sleep(0.0002)

    def close(self) -> None:
        self._stopped.set()
        self._server.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
