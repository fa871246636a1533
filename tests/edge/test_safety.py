"""Physical safety: no pulse at boot, restart or SIGTERM; pulses are bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from gpiozero.pins.mock import MockFactory

from smartlocker.edge_agent import HardwareError, parse_config
from smartlocker.edge_agent.hardware import DoorSensor, Lock
from tests.edge import toml_out
from tests.edge.conftest import LOCK_PINS, config_dict, lock_pulses, lock_rises
from tests.edge.test_state_machine import JITTER_S


@pytest.fixture
def config(tmp_path, public_key_file, mqtt_broker):
    return parse_config(config_dict(tmp_path / "data", public_key_file, mqtt_broker.url))


def test_lock_is_never_energised_by_creation_or_close(config, mock_factory) -> None:
    for _ in range(3):
        locks = [Lock(c, pin_factory=mock_factory) for c in config.compartments]
        for lock in locks:
            assert not lock.energised
            lock.close()
    for cid in LOCK_PINS:
        assert lock_rises(mock_factory, cid) == 0


def test_active_low_lock_idles_high_and_never_pulses_at_boot(config, mock_factory) -> None:
    comp = config.compartments[0].model_copy(update={"lock_active_high": False})
    lock = Lock(comp, pin_factory=mock_factory)
    pin = mock_factory.pin(comp.lock_pin)
    assert pin.state is True  # de-energised = high for an active-low driver
    lock.close()
    assert [s.state for s in pin.states] == [False, True]  # only the idle level, once


def test_pulse_is_bounded_and_cannot_be_extended(config, mock_factory) -> None:
    comp = config.compartments[0]  # pulse 40 ms, hard limit 60 ms
    lock = Lock(comp, pin_factory=mock_factory)
    try:
        assert lock.pulse(10_000) == comp.max_pulse_ms
        with pytest.raises(HardwareError):
            lock.pulse(10)  # no second pulse while one is running
        deadline = time.monotonic() + 2
        while lock.energised and time.monotonic() < deadline:
            time.sleep(0.002)
        assert not lock.energised
        assert lock.pulse(20) == 20
        deadline = time.monotonic() + 2
        while lock.energised and time.monotonic() < deadline:
            time.sleep(0.002)
    finally:
        lock.close()
    assert not lock.energised
    assert list(lock.recent_pulses) == [comp.max_pulse_ms, 20]
    durations = lock_pulses(mock_factory, comp.id)
    assert len(durations) == 2
    # As measured on the pin: the timed length plus the scheduler's latency at most.
    assert comp.max_pulse_ms / 1000 - 0.005 <= durations[0] <= comp.max_pulse_ms / 1000 + JITTER_S
    assert 0.015 <= durations[1] <= 0.020 + JITTER_S


def test_close_during_a_pulse_de_energises_at_once(config, mock_factory) -> None:
    lock = Lock(config.compartments[0], pin_factory=mock_factory)
    lock.pulse(60)
    lock.close()
    assert not lock.energised
    assert lock_pulses(mock_factory, "a1")[0] < 0.06


@pytest.mark.parametrize(
    ("pull", "open_high", "level_when_open"),
    [("none", True, 1), ("none", False, 0), ("up", True, 1), ("up", False, 0), ("down", True, 1)],
)
def test_door_sensor_reads_open_per_wiring(config, pull, open_high, level_when_open) -> None:
    factory = MockFactory()
    comp = config.compartments[0].model_copy(
        update={"door_pull": pull, "door_open_high": open_high}
    )
    changes: list[bool] = []
    sensor = DoorSensor(comp, pin_factory=factory, on_change=lambda _c, o: changes.append(o))
    pin = factory.pin(comp.door_pin)
    try:
        (pin.drive_high if level_when_open else pin.drive_low)()
        assert sensor.is_open
        (pin.drive_low if level_when_open else pin.drive_high)()
        assert not sensor.is_open
    finally:
        sensor.close()
        factory.reset()


def test_no_pulse_at_boot_restart_or_sigterm(
    tmp_path, public_key_file, make_cloud, mqtt_broker, cabinet_id
):
    """The real process (virtual cabinet) started, stopped with SIGTERM, restarted."""
    data = config_dict(tmp_path / "data", public_key_file, mqtt_broker.url, cabinet=cabinet_id)
    config_path = toml_out.write(tmp_path / "cabinet.toml", data)
    cloud = make_cloud(mqtt_broker.host, mqtt_broker.port)
    for run in range(2):
        report = tmp_path / f"pins-{run}.json"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smartlocker.simulators.virtual_cabinet",
                "--config",
                str(config_path),
                "--no-kiosk",
                "--pin-report",
                str(report),
            ],
            env=dict(os.environ, GPIOZERO_PIN_FACTORY="mock"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            cloud.wait_event("boot", count=run + 1, timeout=20)
            cloud.wait(lambda: any(s.online for s, _ in cloud.statuses[-1:]), what="birth (online)")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=20)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        pins = json.loads(report.read_text())
        for cid, pin in LOCK_PINS.items():
            assert [state for _t, state in pins[str(pin)]] == [False], (cid, pins[str(pin)])
        cloud.wait_event("shutdown", count=run + 1)
        cloud.wait(
            lambda: bool(cloud.statuses) and not cloud.statuses[-1][0].online,
            what="offline status",
        )
        status, retained = cloud.statuses[-1]
        assert status.online is False
    # The retained status a newcomer sees is "offline".
    late = make_cloud(mqtt_broker.host, mqtt_broker.port)
    late.wait(lambda: bool(late.statuses), what="retained status")
    status, retained = late.statuses[-1]
    assert (status.online, retained) == (False, True)


def test_pulses_are_ended_by_the_locks_own_thread_not_a_thread_each(
    config, mock_factory, monkeypatch
) -> None:
    """No thread is started on the way to the bolt but the first; every pulse still ends."""
    import threading

    started: list[str] = []
    original = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self.name)
        original(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    comp = config.compartments[0]
    lock = Lock(comp, pin_factory=mock_factory)
    try:
        for _ in range(5):
            assert lock.pulse(5) == 5
            deadline = time.monotonic() + 2
            while lock.energised and time.monotonic() < deadline:
                time.sleep(0.001)
            assert not lock.energised
    finally:
        lock.close()
    assert started == [f"lock-{comp.id}"]
    assert not lock._ender.is_alive()  # close() ends the lock's thread too
    durations = lock_pulses(mock_factory, comp.id)
    assert len(durations) == 5
    assert all(0.004 <= d <= 0.005 + JITTER_S for d in durations)
