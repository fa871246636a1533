"""One error tree for the edge agent."""

from __future__ import annotations

__all__ = ["ConfigError", "EdgeError", "HardwareError", "StoreError"]


class EdgeError(Exception):
    """Root of every error the edge agent raises on purpose."""

    reason: str = "edge_error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ConfigError(EdgeError, ValueError):
    """The cabinet's configuration file is missing, unreadable or invalid."""

    reason = "bad_config"


class HardwareError(EdgeError, RuntimeError):
    """A lock or sensor could not be driven or read."""

    reason = "hardware"


class StoreError(EdgeError, RuntimeError):
    """The local database is unusable."""

    reason = "store"
