"""Cloud settings from the environment (CONTRACT.md, "Configuration").

``SMARTLOCKER_DATABASE_URL``, ``SMARTLOCKER_MQTT_URL``, ``SMARTLOCKER_SIGNING_KEY``
(path of the Ed25519 PEM key) and ``SMARTLOCKER_API_BIND`` (``host:port``). Each
bad value raises :class:`~smartlocker.cloud.errors.ConfigError` naming the
variable. Command-line flags override by passing values to :meth:`Settings.from_env`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = ["Settings"]

_DEFAULT_MQTT = "mqtt://127.0.0.1:1883"
_DEFAULT_BIND = "127.0.0.1:8080"


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    mqtt_url: str = _DEFAULT_MQTT
    signing_key: Path | None = None
    api_bind: str = _DEFAULT_BIND

    def __post_init__(self) -> None:
        db = urlsplit(self.database_url)
        if db.scheme not in ("postgresql", "postgres") or not (db.hostname or db.path):
            raise ConfigError(
                f"SMARTLOCKER_DATABASE_URL must be postgresql://…, got {self.database_url!r}"
            )
        mqtt = urlsplit(self.mqtt_url)
        if mqtt.scheme not in ("mqtt", "mqtts") or not mqtt.hostname:
            raise ConfigError(
                f"SMARTLOCKER_MQTT_URL must be mqtt:// or mqtts://host:port, got {self.mqtt_url!r}"
            )
        try:
            _ = mqtt.port
        except ValueError as exc:
            raise ConfigError(f"SMARTLOCKER_MQTT_URL has a bad port: {self.mqtt_url!r}") from exc
        if self.signing_key is not None and not self.signing_key.is_file():
            raise ConfigError(f"SMARTLOCKER_SIGNING_KEY: no such file {str(self.signing_key)!r}")
        host, sep, port = self.api_bind.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"SMARTLOCKER_API_BIND must be host:port, got {self.api_bind!r}")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: str | None
    ) -> Settings:
        """Read the environment; non-None ``overrides`` (command-line flags) win."""
        env = os.environ if environ is None else environ
        values = {
            "database_url": env.get("SMARTLOCKER_DATABASE_URL"),
            "mqtt_url": env.get("SMARTLOCKER_MQTT_URL") or _DEFAULT_MQTT,
            "signing_key": env.get("SMARTLOCKER_SIGNING_KEY"),
            "api_bind": env.get("SMARTLOCKER_API_BIND") or _DEFAULT_BIND,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {"database_url", "mqtt_url", "signing_key", "api_bind"}
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        if not values["database_url"]:
            raise ConfigError("SMARTLOCKER_DATABASE_URL is not set")
        key = values["signing_key"]
        return cls(
            database_url=str(values["database_url"]),
            mqtt_url=str(values["mqtt_url"]),
            signing_key=Path(key) if key else None,
            api_bind=str(values["api_bind"]),
        )
