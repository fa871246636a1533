"""Fixtures: a Python broker per module (anonymous) and one per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smartlocker.embedded import PythonBroker


@pytest.fixture(scope="module")
def pybroker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PythonBroker]:
    with PythonBroker(tmp_path_factory.mktemp("pybroker")) as broker:
        yield broker


@pytest.fixture
def fresh_pybroker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PythonBroker]:
    with PythonBroker(tmp_path_factory.mktemp("pybroker"), max_packet_size=4096) as broker:
        yield broker
