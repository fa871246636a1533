"""``free_port``: a port nobody listens on, from outside the kernel's range of local
ports for outgoing connections (which may take one of those before our server binds it)."""

from __future__ import annotations

import random
import socket

import pytest

from smartlocker.embedded import mosquitto
from smartlocker.embedded.mosquitto import free_port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_ports_come_from_outside_the_range_of_outgoing_connections() -> None:
    low, high = mosquitto._ephemeral_range()
    assert (low, high) != (0, 0)
    ports = [free_port() for _ in range(200)]
    assert all(not low <= p <= high for p in ports), [p for p in ports if low <= p <= high]
    assert all(10000 <= p <= 65535 for p in ports)
    assert len(set(ports)) > 150  # drawn, not the same few
    assert all(_bindable(p) for p in ports[:20])


def test_a_port_someone_listens_on_is_never_given(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # Outside: only the taken port; the ephemeral range: everything else.
        monkeypatch.setattr(mosquitto, "_LOWEST", port)
        monkeypatch.setattr(mosquitto, "_ephemeral_range", lambda: (port + 1, 65535))
        given = free_port()
        assert given != port  # it fell back to a port the kernel chose
        assert _bindable(given)


def test_seeding_the_random_module_does_not_make_two_callers_draw_alike() -> None:
    """Test tools seed ``random`` (two test processes alike would draw alike)."""
    state = random.getstate()
    try:
        random.seed(7)
        first = [free_port() for _ in range(5)]
        random.seed(7)
        assert [free_port() for _ in range(5)] != first
    finally:
        random.setstate(state)


def test_with_no_room_outside_the_range_the_kernel_chooses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mosquitto, "_ephemeral_range", lambda: (1024, 65535))
    assert _bindable(free_port())
