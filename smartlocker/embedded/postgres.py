"""An embedded PostgreSQL for the demo: the pip-installed ``pgserver`` package.

Used only when no ``SMARTLOCKER_DATABASE_URL`` is given, so that a machine with
nothing but Python can run ``smartlocker demo``. Production and the tests use a
real server.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError"]

logger = logging.getLogger(__name__)


class EmbeddedPostgresError(RuntimeError):
    """The embedded server is not installed or did not start."""


class EmbeddedPostgres:
    """A private PostgreSQL server in ``datadir`` (kept between runs), on a unix socket."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir
        self._server: Any = None

    def start(self) -> str:
        """Start (initialising on first use) and return the connection URL."""
        try:
            from pgserver import get_server  # type: ignore[attr-defined]
        except ImportError as exc:
            raise EmbeddedPostgresError(
                "no embedded PostgreSQL: pip install 'smartlocker[demo]', or set"
                " SMARTLOCKER_DATABASE_URL to a server of yours"
            ) from exc
        self.datadir.mkdir(parents=True, exist_ok=True)
        try:
            self._server = get_server(self.datadir, cleanup_mode="stop")
        except Exception as exc:  # pgserver raises bare exceptions of many kinds
            raise EmbeddedPostgresError(f"embedded PostgreSQL did not start: {exc}") from exc
        url: str = self._server.get_uri()
        logger.info("embedded PostgreSQL running in %s", self.datadir)
        return url

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
