"""The pickup code as a QR image, for the kiosk's scanner."""

from __future__ import annotations

import io

import segno

__all__ = ["qr_png"]


def qr_png(text: str, scale: int = 6) -> bytes:
    """A PNG of ``text`` as a QR code (error correction M, quiet zone kept)."""
    buffer = io.BytesIO()
    segno.make_qr(text, error="m").save(buffer, kind="png", scale=scale)
    return buffer.getvalue()
