"""A TCP proxy to PostgreSQL that reads the client's side of the wire protocol.

To count a client's round trips without a hook in the driver: the client waits for
the server only after a message that makes the server answer, i.e. a ``Sync``
(``S``: psycopg's pipeline sync, and each statement outside pipeline mode), a
``Flush`` (``H``: psycopg reading a result inside a pipeline) or a simple
``Query`` (``Q``); several of them sent back to back are one wait. The server
sends nothing else on its own but notices and notifications, which nobody waits
for. Each message is recorded before it is
forwarded, so once the client has the answer to a message, the message is in
:attr:`PgWireTap.messages`.
"""

from __future__ import annotations

import socket
import struct
import threading
from urllib.parse import urlsplit, urlunsplit

from .tcpproxy import TcpProxy

__all__ = ["PgWireTap"]

#: The messages a client waits for an answer after.
ANSWERED = frozenset("SHQ")
#: Requests before the startup message, answered by one byte (SSL, GSS encryption).
_PRELUDES = (80877103, 80877104)


class _ClientStream:
    """One client's bytes, cut into the messages' type bytes."""

    def __init__(self) -> None:
        self._buffer = b""
        self._started = False

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        found: list[str] = []
        while True:
            if not self._started:
                if len(self._buffer) < 8:
                    return found
                length, code = struct.unpack("!ii", self._buffer[:8])
                if len(self._buffer) < length:
                    return found
                self._buffer = self._buffer[length:]
                if code in _PRELUDES:
                    found.append("prelude")
                else:
                    found.append("startup")
                    self._started = True
                continue
            if len(self._buffer) < 5:
                return found
            (length,) = struct.unpack("!i", self._buffer[1:5])
            if len(self._buffer) < 1 + length:
                return found
            found.append(chr(self._buffer[0]))
            self._buffer = self._buffer[1 + length :]


class PgWireTap(TcpProxy):
    """:class:`TcpProxy` to a PostgreSQL server; :attr:`messages` the clients sent."""

    def __init__(self, db_url: str) -> None:
        parts = urlsplit(db_url)
        assert parts.hostname is not None, db_url
        assert parts.port is not None, db_url
        super().__init__(parts.hostname, parts.port)
        #: The type of each message clients sent, in order ("startup" for the first).
        self.messages: list[str] = []
        self._messages_lock = threading.Lock()
        user = f"{parts.username}@" if parts.username else ""
        # No TLS or GSS negotiation: the bytes stay readable.
        query = "sslmode=disable&gssencmode=disable" + (f"&{parts.query}" if parts.query else "")
        self.url = urlunsplit(
            (parts.scheme, f"{user}{self.host}:{self.port}", parts.path, query, "")
        )

    def mark(self) -> int:
        """A point to count from (:meth:`round_trips`)."""
        with self._messages_lock:
            return len(self.messages)

    def round_trips(self, since: int = 0) -> int:
        """The times a client waited for the server since ``since`` (see the module).

        Answered messages sent back to back count once: the client waits after the
        last of them (psycopg ends a pipeline with a ``Sync`` and a ``Flush``).
        """
        with self._messages_lock:
            sent = self.messages[since:]
        return sum(
            1
            for n, m in enumerate(sent)
            if m in ANSWERED and (n + 1 == len(sent) or sent[n + 1] not in ANSWERED)
        )

    def _forward(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        if not from_client:
            super()._forward(src, dst, from_client)
            return
        stream = _ClientStream()
        while data := src.recv(65536):
            found = stream.feed(data)
            with self._messages_lock:
                self.messages += found
            dst.sendall(data)
