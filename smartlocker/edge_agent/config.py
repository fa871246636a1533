"""The cabinet's TOML configuration as a validated pydantic model.

Everything the agent needs comes from one file (see ``examples/cabinet.toml`` and
``docs/edge.md``); a broken file gives a :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Self
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from smartlocker.protocol import DEFAULT_PREFIX, CabinetId, CompartmentId, TopicScheme

from .errors import ConfigError

__all__ = [
    "AgentConfig",
    "CompartmentConfig",
    "MqttSettings",
    "ThrottleConfig",
    "load_config",
    "parse_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CompartmentConfig(_Strict):
    """One compartment: its lock output, its door input and their timing."""

    id: CompartmentId
    lock_pin: Annotated[str, Field(min_length=1)] | int
    door_pin: Annotated[str, Field(min_length=1)] | int
    #: The lock is energised (open) when its pin is high.
    lock_active_high: bool = True
    #: The door sensor reads high when the door is open.
    door_open_high: bool = True
    #: Internal pull resistor on the door pin: "up", "down" or "none" (external).
    door_pull: Annotated[str, Field(pattern=r"^(up|down|none)$")] = "none"
    pulse_ms: PositiveInt = 500
    #: Hard limit: no pulse is ever longer, whatever asks for it.
    max_pulse_ms: PositiveInt = 1500
    debounce_ms: Annotated[int, Field(ge=0, le=5000)] = 50
    #: After a pulse the door must open within this time, else ``unlock_failed``.
    open_window_s: PositiveFloat = 10.0
    #: Door open longer than this raises ``held_open``.
    held_open_s: PositiveFloat = 120.0
    #: A file with the compartment's temperature (°C, millidegrees, or w1 ``t=``).
    temperature_path: Path | None = None

    @model_validator(mode="after")
    def _pulse_within_limit(self) -> Self:
        if self.pulse_ms > self.max_pulse_ms:
            raise ValueError(
                f"pulse_ms ({self.pulse_ms}) exceeds max_pulse_ms ({self.max_pulse_ms})"
            )
        return self


class ThrottleConfig(_Strict):
    """Wrong-code throttling per kiosk: free tries, then a growing lockout."""

    free_attempts: PositiveInt = 5
    lockout_s: PositiveFloat = 30.0
    max_lockout_s: PositiveFloat = 3600.0
    #: Forget a run of wrong tries after this long without one.
    reset_after_s: PositiveFloat = 900.0


class MqttSettings(_Strict):
    """Where and how the agent connects, parsed from ``mqtt_url`` and friends."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    ca_file: Path | None


class AgentConfig(_Strict):
    cabinet: CabinetId
    #: ``mqtt://`` or ``mqtts://[user:pass@]host[:port]``.
    mqtt_url: str
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_ca_file: Path | None = None
    topic_prefix: str = DEFAULT_PREFIX
    #: The cloud's Ed25519 public key (PEM) that signs commands and desired states.
    cloud_public_key: Path
    #: This cabinet's code key, 32 bytes in hex (``derive_code_key`` in the cloud).
    code_key: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
    data_dir: Path
    kiosk_bind: str = "127.0.0.1:8080"
    kiosk_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "kiosk"
    telemetry_interval_s: PositiveFloat = 60.0
    #: Telemetry rows kept while offline (oldest dropped first); events are never dropped.
    telemetry_keep: PositiveInt = 100
    clock_skew_s: Annotated[float, Field(ge=0, le=600)] = 30.0
    #: Resend unreceipted events when no receipt arrived for this long.
    receipt_timeout_s: PositiveFloat = 30.0
    #: At most this many events are in flight beyond the last receipt.
    send_window: PositiveInt = 200
    #: Door changes refresh the ``reported`` snapshot at most this often (the doors'
    #: events carry every change already); a newly applied desired state goes at once.
    reported_interval_s: Annotated[float, Field(ge=0, le=3600)] = 1.0
    session_expiry_s: PositiveInt = 7 * 24 * 3600
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    reconnect_min_s: PositiveFloat = 1.0
    reconnect_max_s: PositiveFloat = 60.0
    cpu_temp_path: Path = Path("/sys/class/thermal/thermal_zone0/temp")
    throttle: ThrottleConfig = Field(default_factory=ThrottleConfig)
    compartments: Annotated[list[CompartmentConfig], Field(min_length=1, max_length=1000)]

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        TopicScheme(value)
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("mqtt_url must be mqtt://host[:port] or mqtts://host[:port]")
        _ = parts.port  # raises ValueError for a bad port
        return value

    @field_validator("kiosk_bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError("kiosk_bind must be HOST:PORT")
        return value

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: set[str] = set()
        pins: set[str] = set()
        for comp in self.compartments:
            if comp.id in seen:
                raise ValueError(f"compartment {comp.id!r} is listed twice")
            seen.add(comp.id)
            for pin in (comp.lock_pin, comp.door_pin):
                if str(pin) in pins:
                    raise ValueError(f"pin {pin!r} is used twice")
                pins.add(str(pin))
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s exceeds reconnect_max_s")
        return self

    @property
    def code_key_bytes(self) -> bytes:
        return bytes.fromhex(self.code_key)

    @property
    def kiosk_address(self) -> tuple[str, int]:
        host, _, port = self.kiosk_bind.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "agent.sqlite3"

    def compartment(self, compartment_id: str) -> CompartmentConfig | None:
        for comp in self.compartments:
            if comp.id == compartment_id:
                return comp
        return None

    def mqtt(self) -> MqttSettings:
        """The broker address and credentials (explicit fields win over the URL's)."""
        parts = urlsplit(self.mqtt_url)
        tls = parts.scheme == "mqtts"
        username = self.mqtt_username
        if username is None and parts.username:
            username = unquote(parts.username)
        password = self.mqtt_password
        if password is None and parts.password:
            password = unquote(parts.password)
        return MqttSettings(
            host=parts.hostname or "",
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=username,
            password=password,
            ca_file=self.mqtt_ca_file,
        )


def parse_config(data: dict[str, object], *, base: Path | None = None) -> AgentConfig:
    """Validate a configuration mapping; relative paths are taken from ``base``."""
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"invalid cabinet config: {problems}") from None
    if base is None:
        return config

    def resolve(path: Path | None) -> Path | None:
        return None if path is None or path.is_absolute() else base / path

    updates: dict[str, object] = {}
    for name in ("cloud_public_key", "data_dir", "mqtt_ca_file"):
        resolved = resolve(getattr(config, name))
        if resolved is not None:
            updates[name] = resolved
    return config.model_copy(update=updates)


def load_config(path: Path | str) -> AgentConfig:
    """Read and validate the TOML file at ``path``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(data, base=path.parent.resolve())
