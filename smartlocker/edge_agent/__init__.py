"""The cabinet's edge agent: locks, doors, kiosk, durable outbox and MQTT link.

Run it with ``smartlocker edge run --config cabinet.toml`` (see docs/edge.md).
"""

from .agent import Agent, run_until_signal
from .cabinet import Cabinet, Clock, CodeResult, SystemClock
from .config import AgentConfig, CompartmentConfig, ThrottleConfig, load_config, parse_config
from .errors import ConfigError, EdgeError, HardwareError, StoreError
from .store import Store

__all__ = [
    "Agent",
    "AgentConfig",
    "Cabinet",
    "Clock",
    "CodeResult",
    "CompartmentConfig",
    "ConfigError",
    "EdgeError",
    "HardwareError",
    "Store",
    "StoreError",
    "SystemClock",
    "ThrottleConfig",
    "load_config",
    "parse_config",
    "run_until_signal",
]
