"""Registering a new cabinet's MQTT credentials with the broker.

The cabinet id is its MQTT username and client id (CONTRACT.md); the broker's ACL
pattern (``lockers/%u/...``) then limits it to its own topics, so registering a
cabinet means adding one username and password:

* :class:`EmbeddedRegistrar`: the private broker of tests and the demo
  (:meth:`MosquittoBroker.add_user`, which reloads it).
* :class:`PasswordFileRegistrar`: a Mosquitto ``password_file``; the entry is
  written in Mosquitto's own PBKDF2-SHA512 format (``$7$``, as ``mosquitto_passwd``
  writes it) and Mosquitto is sent SIGHUP (from its pid file) to re-read it.
* In production with several brokers, Mosquitto's dynamic-security plugin is the
  better path (``mosquitto_ctrl dynsec createClient <cabinet>``); see docs/api.md.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import secrets
import signal
from pathlib import Path
from typing import Protocol

from smartlocker.embedded import MosquittoBroker

__all__ = [
    "BrokerRegistrar",
    "EmbeddedRegistrar",
    "PasswordFileRegistrar",
    "mosquitto_password_hash",
    "new_device_password",
    "verify_mosquitto_password",
]

logger = logging.getLogger(__name__)

_ITERATIONS = 101  # mosquitto_passwd's default for $7$


class BrokerRegistrar(Protocol):
    """Makes the broker accept ``username`` / ``password`` (idempotent)."""

    def register(self, username: str, password: str) -> None: ...


def new_device_password() -> str:
    """256 random bits, URL-safe (no ``:`` or newline, which a password file forbids)."""
    return secrets.token_urlsafe(32)


def mosquitto_password_hash(
    password: str, *, salt: bytes | None = None, iterations: int = _ITERATIONS
) -> str:
    """The ``$7$`` entry Mosquitto 2 verifies (PBKDF2-HMAC-SHA512, 12-byte salt)."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mosquitto_password(password: str, entry: str) -> bool:
    """Whether ``password`` matches a ``$7$`` entry."""
    parts = entry.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    salt = base64.b64decode(parts[3])
    expected = base64.b64decode(parts[4])
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return secrets.compare_digest(digest, expected)


class EmbeddedRegistrar:
    """Adds the user to a :class:`MosquittoBroker` this process runs (tests, demo)."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker

    def register(self, username: str, password: str) -> None:
        self.broker.add_user(username, password)


class PasswordFileRegistrar:
    """Writes the hashed entry into a Mosquitto password file and signals Mosquitto."""

    def __init__(self, path: Path, *, pid_file: Path | None = None) -> None:
        self.path = Path(path)
        self.pid_file = pid_file

    def register(self, username: str, password: str) -> None:
        if ":" in username or "\n" in username:
            raise ValueError(f"bad MQTT username {username!r}")
        entry = f"{username}:{mosquitto_password_hash(password)}\n"
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # several API workers may provision at once
            lines = self.path.read_text().splitlines(keepends=True) if self.path.exists() else []
            kept = [line for line in lines if line.split(":", 1)[0] != username]
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.writelines([*kept, entry])
            os.replace(tmp, self.path)
        logger.info("registered MQTT user %s in %s", username, self.path)
        if self.pid_file is not None:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, signal.SIGHUP)
