"""Fixtures for the edge agent: keys, configs, mock pins, in-process agents, a cloud."""

from __future__ import annotations

import itertools
import os
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from smartlocker.edge_agent import Agent, AgentConfig, parse_config
from smartlocker.protocol import (
    Ed25519PrivateKey,
    derive_code_key,
    generate_private_key,
    public_key_pem,
)
from tests.edge.cloud import Cloud

os.environ.setdefault("GPIOZERO_PIN_FACTORY", "mock")

CABINET = "cab-a"
CODE_SECRET = b"test code secret of the cloud, 32+ bytes long"
LOCK_PINS = {"a1": 5, "a2": 6, "a3": 13}
DOOR_PINS = {"a1": 17, "a2": 27, "a3": 22}


def code_key(cabinet: str = CABINET) -> bytes:
    return derive_code_key(CODE_SECRET, cabinet)


@pytest.fixture(scope="session")
def cloud_key() -> Ed25519PrivateKey:
    return generate_private_key()


@pytest.fixture
def public_key_file(tmp_path: Path, cloud_key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "cloud.pub"
    path.write_bytes(public_key_pem(cloud_key))
    return path


def config_dict(
    data_dir: Path, public_key: Path, mqtt_url: str, **overrides: Any
) -> dict[str, Any]:
    compartments = [
        {
            "id": cid,
            "lock_pin": LOCK_PINS[cid],
            "door_pin": DOOR_PINS[cid],
            "pulse_ms": 40,
            "max_pulse_ms": 60,
            "debounce_ms": 0,
            "open_window_s": 2.0,
            "held_open_s": 5.0,
        }
        for cid in LOCK_PINS
    ]
    data: dict[str, Any] = {
        "cabinet": CABINET,
        "mqtt_url": mqtt_url,
        "cloud_public_key": str(public_key),
        "code_key": code_key().hex(),
        "data_dir": str(data_dir),
        "kiosk_bind": "127.0.0.1:0",
        "telemetry_interval_s": 3600.0,
        "receipt_timeout_s": 2.0,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
        "compartments": compartments,
    }
    data.update(overrides)
    return data


@pytest.fixture
def cabinet_id() -> str:
    """A cabinet id of this test's own: brokers keep sessions per client id, so no test
    sees what an earlier test's cloud left queued for "its" cabinet."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_config(
    tmp_path: Path, public_key_file: Path, cabinet_id: str
) -> Callable[..., AgentConfig]:
    def make(mqtt_url: str, **overrides: Any) -> AgentConfig:
        overrides.setdefault("cabinet", cabinet_id)
        return parse_config(config_dict(tmp_path / "data", public_key_file, mqtt_url, **overrides))

    return make


@pytest.fixture
def mock_factory() -> Iterator[MockFactory]:
    factory = MockFactory()
    yield factory
    factory.reset()
    Device.pin_factory = None


@pytest.fixture
def agents(mock_factory: MockFactory) -> Iterator[Callable[..., Agent]]:
    """Start in-process agents on ``mock_factory``; all are stopped at teardown."""
    started: list[Agent] = []

    def start(config: AgentConfig, **kwargs: Any) -> Agent:
        agent = Agent(config, pin_factory=kwargs.pop("pin_factory", mock_factory), **kwargs)
        agent.start()
        started.append(agent)
        return agent

    yield start
    for agent in reversed(started):
        if agent.store is not None:
            agent.stop("test over")


@pytest.fixture
def make_cloud(cloud_key: Ed25519PrivateKey, cabinet_id: str) -> Iterator[Callable[..., Cloud]]:
    clouds: list[Cloud] = []

    def make(host: str, port: int, **kwargs: Any) -> Cloud:
        cloud = Cloud(host, port, kwargs.pop("cabinet", cabinet_id), cloud_key, **kwargs)
        clouds.append(cloud)
        return cloud

    yield make
    for cloud in clouds:
        cloud.close()


def lock_pulses(factory: MockFactory, compartment: str) -> list[float]:
    """Durations (s) of every completed energised period of a lock pin (active high)."""
    states = factory.pin(LOCK_PINS[compartment]).states
    durations = []
    for prev, cur in itertools.pairwise(states):
        if prev.state and not cur.state:
            durations.append(cur.timestamp)
    return durations


def lock_rises(factory: MockFactory, compartment: str) -> int:
    states = factory.pin(LOCK_PINS[compartment]).states
    return sum(1 for s in states[1:] if s.state)


def load_toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())
