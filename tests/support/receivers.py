"""Real local receivers for outbound messages: an SMTP server and an HTTP endpoint."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from smartlocker.embedded.mosquitto import free_port

__all__ = ["HttpSink", "SmtpSink"]


class _Collector:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay_s:
            time.sleep(self.delay_s)  # a slow server: lets tests kill a worker mid-send
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(parsed)  # type: ignore[arg-type]
        return "250 OK"


class SmtpSink:
    """An aiosmtpd server on a free port that keeps every message it accepts."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.port = free_port()
        self._collector = _Collector(delay_s)
        self._controller = Controller(self._collector, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[EmailMessage]:
        with self._collector.lock:
            return list(self._collector.messages)

    def __enter__(self) -> SmtpSink:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


class HttpSink:
    """A local HTTP receiver that records requests; it can answer errors or go down."""

    def __init__(self) -> None:
        self.port = free_port()
        self.status = 200
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def received(self) -> list[tuple[dict[str, str], bytes]]:
        with self._lock:
            return list(self.requests)

    def start(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = sink.status
                if status < 300:
                    with sink._lock:
                        sink.requests.append((dict(self.headers.items()), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> HttpSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
