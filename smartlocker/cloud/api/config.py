"""The API's settings: CONTRACT.md's environment variables plus the API's own knobs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_BIND", "ApiSettings"]

DEFAULT_BIND = "127.0.0.1:8080"


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """What one API process needs; :meth:`from_env` reads CONTRACT.md's variables."""

    database_url: str
    mqtt_url: str | None = None
    signing_key: Path | None = None
    bind: str = DEFAULT_BIND
    topic_prefix: str = "lockers"
    pool_min: int = 2
    pool_max: int = 16
    #: Remote unlocks per API key per minute (shared by every worker, in PostgreSQL).
    unlocks_per_minute: int = 600
    #: Wrong pickup codes per parcel before the growing lockout starts.
    code_free_attempts: int = 3
    #: Longest ``?wait=`` a client may ask for.
    max_wait_seconds: float = 30.0
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ApiSettings:
        env = os.environ if env is None else env
        url = overrides.pop("database_url", None) or env.get("SMARTLOCKER_DATABASE_URL")
        if not url:
            raise ValueError("SMARTLOCKER_DATABASE_URL is not set")
        key = overrides.pop("signing_key", None) or env.get("SMARTLOCKER_SIGNING_KEY")
        values: dict[str, object] = {
            "database_url": url,
            "mqtt_url": overrides.pop("mqtt_url", None) or env.get("SMARTLOCKER_MQTT_URL"),
            "signing_key": Path(str(key)) if key else None,
            "bind": overrides.pop("bind", None) or env.get("SMARTLOCKER_API_BIND", DEFAULT_BIND),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
