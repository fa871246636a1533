"""Which embedded broker to run: the system's Mosquitto if installed, else the Python one.

``--broker {auto,mosquitto,python}`` of ``smartlocker demo`` ends up here.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self

from .mosquitto import MosquittoBroker
from .pybroker import PythonBroker

__all__ = ["BROKER_KINDS", "BrokerKind", "EmbeddedBroker", "make_broker", "resolve_broker_kind"]

logger = logging.getLogger(__name__)

BrokerKind = Literal["auto", "mosquitto", "python"]
BROKER_KINDS: tuple[str, ...] = ("auto", "mosquitto", "python")


class EmbeddedBroker(Protocol):
    """What the stack, the API's registrar and the tests use of a private broker."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def url(self) -> str: ...
    @property
    def running(self) -> bool: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def password_path(self) -> Path: ...
    def start(self, timeout: float = 10.0) -> None: ...
    def stop(self, timeout: float = 10.0) -> None: ...
    def kill(self) -> None: ...
    def restart(self, timeout: float = 10.0) -> None: ...
    def add_user(self, name: str, password: str, *, timeout: float = 10.0) -> None: ...
    def log_tail(self, lines: int = 20) -> str: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def _installed(program: str) -> bool:
    return any(
        c and os.access(c, os.X_OK)
        for c in (shutil.which(program), f"/usr/sbin/{program}", f"/usr/local/sbin/{program}")
    )


def resolve_broker_kind(
    kind: str, *, installed: Callable[[str], bool] = _installed
) -> Literal["mosquitto", "python"]:
    """``auto`` → ``mosquitto`` when both ``mosquitto`` and ``mosquitto_passwd`` exist."""
    if kind == "mosquitto":
        return "mosquitto"
    if kind == "python":
        return "python"
    if kind != "auto":
        raise ValueError(f"broker must be one of {BROKER_KINDS}, not {kind!r}")
    if installed("mosquitto") and installed("mosquitto_passwd"):
        return "mosquitto"
    logger.info("mosquitto not installed: using the in-process Python broker")
    return "python"


def make_broker(
    kind: str,
    workdir: Path,
    *,
    users: Mapping[str, str] | None = None,
    cloud_users: Collection[str] = (),
    prefix: str = "lockers",
) -> MosquittoBroker | PythonBroker:
    """A stopped broker of ``kind`` (``auto``, ``mosquitto`` or ``python``)."""
    if resolve_broker_kind(kind) == "mosquitto":
        return MosquittoBroker(workdir, users=users, cloud_users=cloud_users, prefix=prefix)
    return PythonBroker(workdir, users=users, cloud_users=cloud_users, prefix=prefix)
