"""The kiosk: a small local HTTP server for the cabinet's touchscreen.

``GET /`` is the keypad page; ``POST /kiosk/code`` with ``{"code": "..."}`` opens the
matching compartment or says why not; ``GET /kiosk/status`` tells the page whether
the cabinet is online. Standard library only (no web framework on the cabinet).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from .cabinet import Cabinet, CodeResult
from .errors import ConfigError

__all__ = ["KioskServer"]

logger = logging.getLogger(__name__)

MAX_BODY = 1024

_STATUS = {
    None: HTTPStatus.OK,
    "throttled": HTTPStatus.TOO_MANY_REQUESTS,
    "malformed": HTTPStatus.BAD_REQUEST,
    "unavailable": HTTPStatus.SERVICE_UNAVAILABLE,
    "lock_fault": HTTPStatus.SERVICE_UNAVAILABLE,
}


def _page() -> bytes:
    return resources.files("smartlocker.edge_agent").joinpath("static/kiosk.html").read_bytes()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    cabinet: Cabinet
    page: bytes
    online: Callable[[], bool]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("kiosk %s: %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: dict[str, Any]) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def do_GET(self) -> None:
        if self.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif self.path == "/kiosk/status":
            status = {"cabinet": self.server.cabinet.config.cabinet, "online": self.server.online()}
            self._json(HTTPStatus.OK, status)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"ok": False, "reason": "not_found"})

    def do_POST(self) -> None:
        if self.path != "/kiosk/code":
            self._json(HTTPStatus.NOT_FOUND, {"ok": False, "reason": "not_found"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self.close_connection = True
            self._json(HTTPStatus.BAD_REQUEST, {"ok": False, "reason": "malformed"})
            return
        try:
            body = json.loads(self.rfile.read(length))
        except (ValueError, RecursionError):
            body = None
        code = body.get("code") if isinstance(body, dict) else None
        result = self.server.cabinet.submit_code(code)
        self._json(_STATUS.get(result.reason, HTTPStatus.FORBIDDEN), _result_json(result))


def _result_json(result: CodeResult) -> dict[str, Any]:
    data: dict[str, Any] = {"ok": result.ok}
    if result.compartment is not None and result.ok:
        data["compartment"] = result.compartment
        data["kind"] = result.kind
    if result.reason is not None:
        data["reason"] = result.reason
    if result.locked_until is not None:
        data["locked_until"] = result.locked_until.isoformat().replace("+00:00", "Z")
    return data


class KioskServer:
    """The kiosk's HTTP server on its own thread."""

    def __init__(
        self,
        address: tuple[str, int],
        cabinet: Cabinet,
        *,
        online: Callable[[], bool] = lambda: False,
    ) -> None:
        try:
            self._server = _Server(address, _Handler)
        except OSError as exc:
            raise ConfigError(
                f"kiosk_bind {address[0]}:{address[1]}: {exc.strerror or exc}"
            ) from None
        self._server.cabinet = cabinet
        self._server.page = _page()
        self._server.online = online
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        name = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{name}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="kiosk"
        )
        self._thread.daemon = True
        self._thread.start()
        logger.info("kiosk listening on %s", self.url)

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5.0)
            self._thread = None
        self._server.server_close()
