"""Pickup and deposit codes: random, and stored only as keyed hashes.

The cloud derives one code key per cabinet from its own secret; the cabinet
holds just its derived key, so it can check a typed code offline against the
hashes in its desired state, and the database never holds a code in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import MalformedMessage
from .ids import validate_cabinet_id

__all__ = [
    "CODE_DIGITS",
    "derive_code_key",
    "generate_code",
    "hash_code",
    "normalize_code",
]

CODE_DIGITS = 8
_CODE_RE = re.compile(r"^[0-9]{6,16}$")
_SEPARATORS = re.compile(r"[\s-]")


def generate_code(digits: int = CODE_DIGITS) -> str:
    """A fresh code from the operating system's CSPRNG."""
    if not 8 <= digits <= 16:
        raise ValueError("codes have 8 to 16 digits")
    return "".join(secrets.choice("0123456789") for _ in range(digits))


def normalize_code(code: str) -> str:
    """The code as hashed: digits only (spaces and dashes typed by people removed)."""
    if not isinstance(code, str):
        raise MalformedMessage("a code must be a string")
    cleaned = _SEPARATORS.sub("", code)
    if not _CODE_RE.fullmatch(cleaned):
        raise MalformedMessage("a code is 6 to 16 digits", reason="malformed_code")
    return cleaned


def derive_code_key(secret: bytes, cabinet: str) -> bytes:
    """The 32-byte code key of one cabinet, derived from the cloud's secret."""
    validate_cabinet_id(cabinet)
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"smartlocker code key",
        info=b"v1\x00" + cabinet.encode("ascii"),
    )
    return hkdf.derive(secret)


def hash_code(code_key: bytes, code: str) -> str:
    """The keyed hash (hex HMAC-SHA256) under which a code is stored and sent."""
    if len(code_key) < 16:
        raise ValueError("a code key has at least 16 bytes")
    message = b"smartlocker-code-v1\x00" + normalize_code(code).encode("ascii")
    return hmac.new(code_key, message, hashlib.sha256).hexdigest()
