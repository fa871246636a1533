"""Where simulated recipients and couriers receive their messages: a local SMS provider.

The cloud's notification worker posts signed webhooks here (the ``sms`` channel);
the inbox verifies each signature with the documented recipe and keeps the
pickup code it carries, keyed by parcel.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from smartlocker.cloud.notify import SIGNATURE_HEADER, WebhookSignatureError, verify_webhook

__all__ = ["CodeInbox"]

logger = logging.getLogger(__name__)

_CODE_RE = re.compile(r"\b(\d{8,16})\b")


class CodeInbox:
    """A signed-webhook receiver on ``127.0.0.1:port`` that people read their codes from."""

    def __init__(self, secret: str, port: int = 0) -> None:
        self.secret = secret
        self.codes: dict[str, str] = {}
        self.kinds: Counter[str] = Counter()
        self.refused = 0
        self._lock = threading.Condition()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = inbox._receive(self.headers.get(SIGNATURE_HEADER), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("inbox: %s", format % args)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/sms"

    def _receive(self, header: str | None, body: bytes) -> int:
        try:
            verify_webhook(self.secret, header, body, now=time.time())
            message = json.loads(body)
        except (WebhookSignatureError, ValueError) as exc:
            logger.warning("inbox refused a message: %s", exc)
            with self._lock:
                self.refused += 1
            return 401
        parcel = message.get("parcel")
        match = _CODE_RE.search(str(message.get("text", "")))
        with self._lock:
            self.kinds[str(message.get("topic", "unknown"))] += 1
            if parcel and match and message.get("topic") == "code_issued":
                self.codes[str(parcel)] = match.group(1)
            self._lock.notify_all()
        return 204

    def code_for(self, parcel: str) -> str | None:
        with self._lock:
            return self.codes.get(parcel)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> CodeInbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
