"""``smartlocker edge run``: starts the agent, stops cleanly on SIGTERM, explains bad configs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from tests.edge import toml_out
from tests.edge.conftest import config_dict

CLI = [sys.executable, "-c", "from smartlocker.cli import main; main()"]


def test_edge_run_until_sigterm(
    tmp_path, public_key_file, mqtt_broker, make_cloud, cabinet_id
) -> None:
    data = config_dict(tmp_path / "data", public_key_file, mqtt_broker.url, cabinet=cabinet_id)
    config = toml_out.write(tmp_path / "cabinet.toml", data)
    cloud = make_cloud(mqtt_broker.host, mqtt_broker.port)
    proc = subprocess.Popen(
        [*CLI, "--log-level", "INFO", "edge", "run", "--config", str(config)],
        env=dict(os.environ, GPIOZERO_PIN_FACTORY="mock"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        cloud.wait_event("boot", timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    cloud.wait_event("shutdown")
    assert cloud.events_of("shutdown")[0].reason == "SIGTERM"
    assert b"stopped (SIGTERM)" in stderr


def test_edge_run_with_a_broken_config(tmp_path) -> None:
    bad = tmp_path / "cabinet.toml"
    bad.write_text('cabinet = "cab-a"\n')
    result = subprocess.run(
        [*CLI, "edge", "run", "--config", str(bad)], capture_output=True, timeout=30
    )
    assert result.returncode == 1
    assert b"invalid cabinet config" in result.stderr
    assert b"mqtt_url" in result.stderr
    assert b"Traceback" not in result.stderr


def test_edge_run_with_a_missing_key_or_a_busy_kiosk_port(tmp_path, public_key_file) -> None:
    data = config_dict(tmp_path / "data", tmp_path / "nope.pub", "mqtt://127.0.0.1:1")
    config = toml_out.write(tmp_path / "cabinet.toml", data)
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock")
    result = subprocess.run(
        [*CLI, "edge", "run", "--config", str(config)], capture_output=True, timeout=30, env=env
    )
    assert result.returncode == 1
    assert b"cloud_public_key" in result.stderr
    assert b"Traceback" not in result.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        data = config_dict(
            tmp_path / "data", public_key_file, "mqtt://127.0.0.1:1", kiosk_bind=f"127.0.0.1:{port}"
        )
        toml_out.write(config, data)
        result = subprocess.run(
            [*CLI, "edge", "run", "--config", str(config)], capture_output=True, timeout=30, env=env
        )
    assert result.returncode == 1
    assert b"kiosk_bind" in result.stderr
    assert b"Traceback" not in result.stderr
