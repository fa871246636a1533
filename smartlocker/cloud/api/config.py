"""The API's settings: CONTRACT.md's environment variables plus the API's own knobs.

CONTRACT.md names ``SMARTLOCKER_DATABASE_URL``, ``SMARTLOCKER_MQTT_URL``,
``SMARTLOCKER_SIGNING_KEY`` and ``SMARTLOCKER_API_BIND``; the API also reads
``SMARTLOCKER_MOSQUITTO_PASSWD`` / ``SMARTLOCKER_MOSQUITTO_PID`` (where provisioning
registers cabinet passwords) and ``SMARTLOCKER_DEVICE_MQTT_URL`` (the broker address
handed to new cabinets), all documented in docs/api.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_BIND", "ApiSettings"]

DEFAULT_BIND = "127.0.0.1:8080"

_PATHS = {
    "signing_key": "SMARTLOCKER_SIGNING_KEY",
    "mosquitto_password_file": "SMARTLOCKER_MOSQUITTO_PASSWD",
    "mosquitto_pid_file": "SMARTLOCKER_MOSQUITTO_PID",
}
_STRINGS = {
    "database_url": "SMARTLOCKER_DATABASE_URL",
    "mqtt_url": "SMARTLOCKER_MQTT_URL",
    "bind": "SMARTLOCKER_API_BIND",
    "device_mqtt_url": "SMARTLOCKER_DEVICE_MQTT_URL",
}


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """What one API process needs; :meth:`from_env` reads the environment."""

    database_url: str
    mqtt_url: str | None = None
    signing_key: Path | None = None
    bind: str = DEFAULT_BIND
    topic_prefix: str = "lockers"
    pool_min: int = 2
    pool_max: int = 16
    #: Remote unlocks per API key per minute (shared by every worker, in PostgreSQL).
    unlocks_per_minute: int = 600
    #: The longest ``?wait=`` honoured (a longer one is cut to this).
    max_wait_seconds: float = 30.0
    #: Seconds a verified API key is trusted without the database (the longest a
    #: revocation takes to reach a worker; 0: every request asks the database).
    key_cache_seconds: float = 2.0
    #: Wrong pickup codes per parcel / key before the growing lockout starts.
    code_free_attempts: int = 5
    #: Where provisioning registers cabinets' MQTT passwords (Mosquitto password file).
    mosquitto_password_file: Path | None = None
    #: Mosquitto's pid file: SIGHUP after a new cabinet so it re-reads the password file.
    mosquitto_pid_file: Path | None = None
    #: The broker address written into a provisioned cabinet's credentials.
    device_mqtt_url: str | None = None
    #: Dashboard live streams one process serves at once (each holds a server thread).
    dashboard_streams: int = 4

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ApiSettings:
        """Read the environment; non-None ``overrides`` (command-line flags) win."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, var in _STRINGS.items():
            given = overrides.pop(name, None) or env.get(var)
            if given:
                values[name] = str(given)
        for name, var in _PATHS.items():
            given = overrides.pop(name, None) or env.get(var)
            if given:
                values[name] = Path(str(given))
        limit = overrides.pop("unlocks_per_minute", None) or env.get(
            "SMARTLOCKER_API_UNLOCKS_PER_MINUTE"
        )
        if limit:
            values["unlocks_per_minute"] = int(str(limit))
        streams = overrides.pop("dashboard_streams", None) or env.get(
            "SMARTLOCKER_DASHBOARD_STREAMS"
        )
        if streams:
            values["dashboard_streams"] = int(str(streams))
        cache = overrides.pop("key_cache_seconds", None)
        if cache is None:
            cache = env.get("SMARTLOCKER_API_KEY_CACHE_SECONDS") or None
        if cache is not None:
            values["key_cache_seconds"] = float(str(cache))
        if "database_url" not in values:
            raise ValueError("SMARTLOCKER_DATABASE_URL is not set")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
