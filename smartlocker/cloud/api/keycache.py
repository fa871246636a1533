"""A short-lived, per-process cache of verified API keys (one query less per request).

Only keys that verified are kept, with the hash of their secret: a hit still hashes
the presented secret and compares it in constant time, so a wrong secret for a cached
id falls through to the database and fails there. Unknown ids are never cached.

The price is the revocation delay: a key revoked in the database (or its role or
sites changed) keeps working in a process that verified it for at most ``ttl``
seconds (``SMARTLOCKER_API_KEY_CACHE_SECONDS``, default 2; 0 turns the cache off).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .auth import Principal

__all__ = ["DEFAULT_TTL", "KeyCache"]

#: Seconds a verified key is trusted without asking the database again.
DEFAULT_TTL = 2.0


class KeyCache:
    """``key id → (secret hash, principal)`` for at most ``ttl`` seconds each."""

    def __init__(
        self,
        ttl: float = DEFAULT_TTL,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, str, Principal]] = {}

    def get(self, key_id: str) -> tuple[str, Principal] | None:
        """The cached ``(secret hash, principal)`` of ``key_id``, if still fresh."""
        if self.ttl <= 0:
            return None
        with self._lock:
            entry = self._entries.get(key_id)
            if entry is None:
                return None
            if self._clock() >= entry[0]:
                del self._entries[key_id]
                return None
            return entry[1], entry[2]

    def put(self, key_id: str, secret_hash: str, principal: Principal) -> None:
        """Remember a key that just verified against the database."""
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[key_id] = (self._clock() + self.ttl, secret_hash, principal)

    def forget(self, key_id: str) -> None:
        """Drop one key (this process revoked it: no delay here)."""
        with self._lock:
            self._entries.pop(key_id, None)
