"""Mosquitto-format password entries: hashing, verifying, and writing a password file.

Neutral ground between the API (which provisions cabinets by writing hashed entries)
and the embedded brokers (which check them): neither imports the other for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "mosquitto_password_hash",
    "read_password_file",
    "verify_mosquitto_password",
    "write_password_file",
]

_ITERATIONS = 101  # mosquitto_passwd's default for $7$


def mosquitto_password_hash(
    password: str, *, salt: bytes | None = None, iterations: int = _ITERATIONS
) -> str:
    """The ``$7$`` entry Mosquitto 2 verifies (PBKDF2-HMAC-SHA512, 12-byte salt)."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mosquitto_password(password: str, entry: str) -> bool:
    """Whether ``password`` matches a ``$7$`` (PBKDF2) or ``$6$`` (SHA-512) entry.

    A malformed entry matches nothing (it is a file someone edited by hand).
    """
    parts = entry.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            salt, expected = base64.b64decode(parts[3]), base64.b64decode(parts[4])
            iterations = int(parts[2])
            if not 0 < iterations <= 10_000_000:
                return False
            digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
        elif len(parts) == 4 and parts[1] == "6":
            salt, expected = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            digest = hashlib.sha512(password.encode() + salt).digest()
        else:
            return False
    except (ValueError, binascii.Error):
        return False
    return secrets.compare_digest(digest, expected)


def read_password_file(path: Path) -> dict[str, str]:
    """``username → hashed entry`` of a Mosquitto password file (blank/comment lines skipped)."""
    users: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        name, entry = line.split(":", 1)
        users[name] = entry
    return users


def write_password_file(path: Path, users: Mapping[str, str]) -> None:
    """Hash ``users`` (name → plain password) into ``path`` atomically, mode 0600.

    Entries already in the file for other names (a provisioning API adds its own)
    are kept.
    """
    for name, password in users.items():
        if ":" in name or "\n" in name + password or not name:
            raise ValueError(f"user {name!r}: empty names, ':' and newlines cannot be stored")
    kept = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip() and line.split(":", 1)[0] not in users:
                kept.append(line + "\n")
    fresh = path.with_name(path.name + ".new")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{name}:{mosquitto_password_hash(pw)}\n" for name, pw in users.items())
        f.writelines(kept)
    fresh.replace(path)
