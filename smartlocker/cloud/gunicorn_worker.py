"""gunicorn's threaded worker, keeping a busy keep-alive connection on its thread.

gunicorn's ``gthread`` worker hands every kept-alive connection back to its main
thread after each answer: the thread's future completes, a callback wakes the main
loop through a pipe, the socket goes back into its epoll set, and when the next
request arrives the main loop submits the connection to the pool again, whose idle
thread is woken. For an API client that sends its next request at once (a courier's
system, a shop's back-end, the unlock benchmark) that is two thread wake-ups, a
dozen system calls and half a millisecond per request, on the request's own path.

:class:`LingeringThreadWorker` lets the thread that answered wait a moment
(:data:`LINGER_S`) for the connection's next request and serve it directly. Only
when the client stays quiet does the connection go back to the main loop, as
before; and a thread lingers only while another thread of the pool is free, so a
new connection never waits for a quiet one. Everything else (parsing, timeouts,
graceful shutdown, TLS, HTTP/2) stays gunicorn's.

It lives outside :mod:`smartlocker.cloud.api` because gunicorn's master process
imports the worker class: it must not import the application (and its metrics)
before the workers fork.
"""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

__all__ = ["LINGER_S", "LingeringThreadWorker"]

#: How long a thread waits on its connection for the next request (s).
LINGER_S = 0.05


class LingeringThreadWorker(ThreadWorker):  # type: ignore[misc]
    """``gthread`` with a short wait for the next request on the answering thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._busy = 0
        self._busy_lock = threading.Lock()

    def handle(self, conn: Any) -> Any:
        with self._busy_lock:
            self._busy += 1
        try:
            result = super().handle(conn)
            while result is True and self._next_request_comes(conn):
                result = super().handle(conn)
            return result
        finally:
            with self._busy_lock:
                self._busy -= 1

    def _next_request_comes(self, conn: Any) -> bool:
        """Whether to serve ``conn`` again on this thread (its next request is here).

        False hands the connection back to gunicorn's main loop, which keeps it alive
        (or closes it) as usual.
        """
        if not self.alive or conn.is_http2:
            return False
        if conn.parser.unreader.buf.getvalue():
            return True  # read ahead with the last body: the request is already here
        sock = conn.sock
        if isinstance(sock, ssl.SSLSocket):
            return False  # no peeking under TLS; the main loop waits for it instead
        with self._busy_lock:
            if self._busy >= self.cfg.threads:
                return False  # every thread is busy: leave this one to the others
        try:
            sock.settimeout(LINGER_S)
            try:
                peeked = sock.recv(1, socket.MSG_PEEK)
            finally:
                sock.settimeout(None)
        except TimeoutError:
            return False
        except OSError:
            return False  # reset or closed: the main loop's handling closes it
        # b"": the client closed; the main loop's next read finds out and closes it.
        return bool(peeked)
