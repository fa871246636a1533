"""Registering a new cabinet's MQTT credentials with the broker.

The cabinet id is its MQTT username and client id (CONTRACT.md); the broker's ACL
pattern (``lockers/%u/...``) then limits it to its own topics, so registering a
cabinet means adding one username and password:

* :class:`EmbeddedRegistrar`: the private broker of tests and the demo
  (``add_user`` of :class:`MosquittoBroker`, which reloads it, or of
  :class:`PythonBroker`, which re-reads its password file on the next CONNECT).
* :class:`PasswordFileRegistrar`: a Mosquitto ``password_file``; the entry is
  written in Mosquitto's own PBKDF2-SHA512 format (``$7$``, as ``mosquitto_passwd``
  writes it, see :mod:`smartlocker.mqtt_passwords`) and Mosquitto is sent SIGHUP
  (from its pid file) to re-read it. The Python broker needs no signal: it notices
  the file changed on the next CONNECT.
* In production with several brokers, Mosquitto's dynamic-security plugin is the
  better path (``mosquitto_ctrl dynsec createClient <cabinet>``); see docs/api.md.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from smartlocker.mqtt_passwords import mosquitto_password_hash, verify_mosquitto_password

if TYPE_CHECKING:  # production API processes never load the embedded brokers
    from smartlocker.embedded import EmbeddedBroker

__all__ = [
    "BrokerRegistrar",
    "EmbeddedRegistrar",
    "PasswordFileRegistrar",
    "mosquitto_password_hash",
    "new_device_password",
    "verify_mosquitto_password",
]

logger = logging.getLogger(__name__)


class BrokerRegistrar(Protocol):
    """Makes the broker accept ``username`` / ``password`` (idempotent)."""

    def register(self, username: str, password: str) -> None: ...


def new_device_password() -> str:
    """256 random bits, URL-safe (no ``:`` or newline, which a password file forbids)."""
    return secrets.token_urlsafe(32)


class EmbeddedRegistrar:
    """Adds the user to an embedded broker this process runs (tests, demo)."""

    def __init__(self, broker: EmbeddedBroker) -> None:
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
