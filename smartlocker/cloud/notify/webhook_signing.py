"""HMAC-SHA256 signatures on outgoing webhooks, with a timestamp against replay.

Header ``Smartlocker-Signature: t=<unix seconds>,v1=<hex>`` where ``hex`` is
``HMAC-SHA256(secret, "<t>." + raw body)``. Every attempt is signed afresh, so
a delivery replayed later carries an old ``t`` and is refused by a receiver
that checks the tolerance.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = [
    "SIGNATURE_HEADER",
    "TOLERANCE_S",
    "WebhookSignatureError",
    "sign_webhook",
    "verify_webhook",
]

SIGNATURE_HEADER = "Smartlocker-Signature"
TOLERANCE_S = 300


class WebhookSignatureError(ValueError):
    """The signature header is missing, malformed, wrong, or too old."""


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """The value of the signature header for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify_webhook(
    secret: str, header: str | None, body: bytes, now: float, tolerance: int = TOLERANCE_S
) -> int:
    """Check a received webhook; returns its timestamp or raises the error."""
    if not header:
        raise WebhookSignatureError("no signature header")
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        raise WebhookSignatureError("malformed signature header") from None
    if not hmac.compare_digest(given, _digest(secret, timestamp, body)):
        raise WebhookSignatureError("signature does not match")
    if abs(now - timestamp) > tolerance:
        raise WebhookSignatureError(f"signature is {int(now - timestamp)} s old: replayed?")
    return timestamp
