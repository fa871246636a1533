"""Ed25519 signatures over the canonical encoding of commands and desired states.

The cloud holds the private key; a cabinet holds only the public key. A
signature covers every field but ``sig`` itself. Verification works on the raw
received JSON (not on a re-serialised model) so that no two byte strings that
differ can share a signature.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .canonical import canonical_json
from .codec import decode
from .errors import BadSignature, MalformedMessage, ProtocolError
from .messages import SignedMessage
from .topics import Channel

__all__ = [
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "decode_verified",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "private_key_pem",
    "public_key_pem",
    "sign",
    "signing_bytes",
    "verify_payload",
]

S = TypeVar("S", bound=SignedMessage)

#: Verifies (signature, message) for a raw 32-byte public key, or raises BadSignature.
_Verifier = Callable[[bytes, bytes], None]


def _cryptography_verifier(key: Ed25519PublicKey) -> _Verifier:
    def verify(signature: bytes, message: bytes) -> None:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise BadSignature("signature does not verify") from None

    return verify


try:  # libsodium verifies Ed25519 in about half the time OpenSSL takes (the edge's hot path)
    from nacl.exceptions import CryptoError as _NaclError
    from nacl.signing import VerifyKey as _NaclVerifyKey

    _SODIUM = True
except ImportError:  # pragma: no cover - PyNaCl comes with the edge extra
    _SODIUM = False


@functools.lru_cache(maxsize=16)
def _sodium_verifier(raw_key: bytes) -> _Verifier:
    verify_key = _NaclVerifyKey(raw_key)

    def verify(signature: bytes, message: bytes) -> None:
        try:
            verify_key.verify(message, signature)
        except _NaclError:  # a bad signature, or one of the wrong length
            raise BadSignature("signature does not verify") from None

    return verify


def _verifier(key: Ed25519PublicKey) -> _Verifier:
    """PyNaCl's verify when it is installed, else cryptography's (the same answers)."""
    if not _SODIUM:
        return _cryptography_verifier(key)
    return _sodium_verifier(key.public_bytes_raw())


def generate_private_key() -> Ed25519PrivateKey:
    """A new random Ed25519 key for the cloud."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (protect the file with permissions)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM of the public half, as cabinets store it."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(source: Path | str | bytes) -> Ed25519PrivateKey:
    """Load a PEM private key from a file path or PEM bytes."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"not a PEM private key: {exc}", reason="bad_key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ProtocolError("the private key is not an Ed25519 key", reason="bad_key")
    return key


def load_public_key(source: Path | str | bytes) -> Ed25519PublicKey:
    """Load a PEM public key from a file path or PEM bytes."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"not a PEM public key: {exc}", reason="bad_key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ProtocolError("the public key is not an Ed25519 key", reason="bad_key")
    return key


def signing_bytes(fields: dict[str, Any]) -> bytes:
    """What a signature covers: the canonical JSON of every field except ``sig``."""
    return canonical_json({k: v for k, v in fields.items() if k != "sig"})


def sign(message: S, key: Ed25519PrivateKey) -> S:
    """A copy of ``message`` carrying its signature."""
    payload = signing_bytes(message.model_dump(mode="json"))
    signature = base64.b64encode(key.sign(payload)).decode("ascii")
    return cast(S, message.model_copy(update={"sig": signature}))


def verify_payload(payload: bytes | bytearray | str, key: Ed25519PublicKey) -> None:
    """Check the signature of a raw signed message; raises :class:`BadSignature`."""
    try:
        fields = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessage(f"invalid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise MalformedMessage("a signed message must be a JSON object")
    sig = fields.get("sig")
    if not isinstance(sig, str) or not sig:
        raise BadSignature("message is not signed")
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise BadSignature("signature is not valid base64") from None
    # Refuse non-canonical base64 (e.g. stray low bits), so a signature has one spelling.
    if base64.b64encode(raw).decode("ascii") != sig:
        raise BadSignature("signature is not canonical base64")
    _verifier(key)(raw, signing_bytes(fields))


def decode_verified(
    channel: Channel, payload: bytes | bytearray | str, key: Ed25519PublicKey
) -> SignedMessage:
    """Parse a command or desired state and verify its signature, in that order."""
    message = decode(channel, payload)
    if not isinstance(message, SignedMessage):
        raise MalformedMessage(f"{channel} does not carry signed messages")
    verify_payload(payload, key)
    return message
