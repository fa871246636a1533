"""Pytest plugin: private Mosquitto brokers (loaded by ``-p tests.fix_mqtt``).

``mqtt_broker``   session-wide anonymous broker (agent and ingest tests).
``secure_broker`` session-wide broker with passwords, the CONTRACT.md ACL and TLS.
``fresh_broker``  a new anonymous broker per test, which the test may stop, kill and
                  restart at will.
``any_secure_broker`` / ``any_fresh_broker``: the same, once with Mosquitto and once
                  with the in-process Python broker (parametrized by broker kind).
Every broker runs under pytest's tmp_path_factory and is stopped at teardown, even
when the test failed.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from smartlocker.embedded import MosquittoBroker, PythonBroker
from tests.support.pki import TestPki, make_pki

B = TypeVar("B", MosquittoBroker, PythonBroker)
CABINETS = ("cab-a", "cab-b")
CLOUD_USER = "cloud"


@dataclass
class SecureBroker:
    """The ``secure_broker`` fixture: the broker plus what clients need to log in."""

    broker: MosquittoBroker | PythonBroker
    pki: TestPki
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def tls_port(self) -> int:
        assert self.broker.tls_port is not None
        return self.broker.tls_port

    @property
    def ca(self) -> Path:
        """The CA that signed the TLS listener's certificate."""
        return self.pki.ca

    @property
    def wrong_ca(self) -> Path:
        """A CA that has nothing to do with the broker."""
        return self.pki.wrong_ca


@contextmanager
def _running(broker: B) -> Iterator[B]:
    """Start ``broker`` and stop it afterwards, whatever happened in between."""
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """A test CA, a server certificate for 127.0.0.1/localhost, and an unrelated CA."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A private anonymous broker shared by the session."""
    with _running(MosquittoBroker(tmp_path_factory.mktemp("mqtt-broker"))) as broker:
        yield broker


@pytest.fixture(scope="session")
def secure_broker(
    tmp_path_factory: pytest.TempPathFactory, test_pki: TestPki
) -> Iterator[SecureBroker]:
    """A broker with passwords for cab-a, cab-b and cloud, the contract ACL and TLS."""
    passwords = {name: secrets.token_urlsafe(16) for name in (*CABINETS, CLOUD_USER)}
    broker = MosquittoBroker(
        tmp_path_factory.mktemp("secure-broker"),
        users=passwords,
        cloud_users=[CLOUD_USER],
        tls=test_pki.server,
    )
    with _running(broker) as running:
        yield SecureBroker(broker=running, pki=test_pki, passwords=passwords)


@pytest.fixture
def fresh_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A new anonymous broker for one test, which may stop, kill or restart it."""
    with _running(MosquittoBroker(tmp_path_factory.mktemp("fresh-broker"))) as broker:
        yield broker


@pytest.fixture(scope="session")
def python_secure_broker(
    tmp_path_factory: pytest.TempPathFactory, test_pki: TestPki
) -> Iterator[SecureBroker]:
    """``secure_broker`` served by the in-process Python broker."""
    passwords = {name: secrets.token_urlsafe(16) for name in (*CABINETS, CLOUD_USER)}
    broker = PythonBroker(
        tmp_path_factory.mktemp("py-secure-broker"),
        users=passwords,
        cloud_users=[CLOUD_USER],
        tls=test_pki.server,
    )
    with _running(broker) as running:
        yield SecureBroker(broker=running, pki=test_pki, passwords=passwords)


@pytest.fixture(params=["mosquitto", "python"])
def any_secure_broker(request: pytest.FixtureRequest) -> SecureBroker:
    """``secure_broker`` with Mosquitto, then with the Python broker."""
    name = "secure_broker" if request.param == "mosquitto" else "python_secure_broker"
    broker: SecureBroker = request.getfixturevalue(name)
    return broker


@pytest.fixture(params=["mosquitto", "python"])
def any_fresh_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MosquittoBroker | PythonBroker]:
    """``fresh_broker`` with Mosquitto, then with the Python broker."""
    kind = MosquittoBroker if request.param == "mosquitto" else PythonBroker
    with _running(kind(tmp_path_factory.mktemp("fresh-broker"))) as broker:
        yield broker
