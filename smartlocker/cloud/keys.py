"""The cloud's keys, all from one file: ``SMARTLOCKER_SIGNING_KEY``.

The file is the cloud's Ed25519 private key (PKCS#8 PEM, made with
``smartlocker protocol keygen``). Commands and desired states are signed with it;
the code secret, from which each cabinet's code key is derived
(:func:`smartlocker.protocol.derive_code_key`), is HKDF-SHA256 over the key's raw
32 private bytes with info ``"smartlocker code secret v1"``. One file configures
both; rotating the signing key therefore also changes every code hash (re-issue
codes, republish desired states).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from smartlocker.protocol import (
    Ed25519PrivateKey,
    ProtocolError,
    derive_code_key,
    load_private_key,
)

from .errors import ConfigError

__all__ = ["SIGNING_KEY_ENV", "CloudKeys", "code_secret_from", "load_keys"]

SIGNING_KEY_ENV = "SMARTLOCKER_SIGNING_KEY"
_CODE_SECRET_INFO = b"smartlocker code secret v1"


def code_secret_from(key: Ed25519PrivateKey) -> bytes:
    """The 32-byte code secret derived from the signing key."""
    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CODE_SECRET_INFO)
    return hkdf.derive(raw)


@dataclass(frozen=True, slots=True)
class CloudKeys:
    """The signing key and the code secret derived from it."""

    signing_key: Ed25519PrivateKey
    code_secret: bytes

    @classmethod
    def from_private_key(cls, key: Ed25519PrivateKey) -> CloudKeys:
        return cls(key, code_secret_from(key))

    def code_key(self, cabinet: str) -> bytes:
        """The code key of one cabinet (what its config holds)."""
        return derive_code_key(self.code_secret, cabinet)


def load_keys(source: Path | str | bytes | None = None) -> CloudKeys:
    """Load from a PEM file path or PEM bytes (default: ``$SMARTLOCKER_SIGNING_KEY``)."""
    if source is None:
        source = os.environ.get(SIGNING_KEY_ENV)
        if not source:
            raise ConfigError(f"{SIGNING_KEY_ENV} is not set (path to the Ed25519 PEM key)")
    try:
        key = load_private_key(source)
    except OSError as exc:
        raise ConfigError(f"cannot read the signing key {source!r}: {exc}") from exc
    except ProtocolError as exc:
        raise ConfigError(f"{SIGNING_KEY_ENV}: {exc}") from exc
    return CloudKeys.from_private_key(key)
