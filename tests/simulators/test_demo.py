"""``smartlocker demo``: from nothing to parcels deposited and picked up, then a clean stop.

It runs with ``--broker python``, as on a machine without mosquitto (the stack on
Mosquitto is exercised by tests/simulators/test_scenario.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def test_demo_shows_deposits_and_pickups_and_the_walkthrough_curl_lists_them(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SMARTLOCKER_DATABASE_URL"}
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "run")  # pgserver keeps its lock there
    cmd = [
        sys.executable,
        "-m",
        "smartlocker.cli",
        "demo",
        "--broker",
        "python",
        "--api-port",
        "0",
        "--cabinets",
        "2",
        "--day",
        "40",
        "--parcels-per-day",
        "30",
        "--workdir",
        str(tmp_path / "demo"),
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines: list[str] = []
    started = time.monotonic()
    first_pickup = None
    try:
        for line in proc.stdout:
            lines.append(line)
            if "picked up DEMO-" in line:
                first_pickup = time.monotonic() - started
                break
            assert time.monotonic() - started < 120, "".join(lines[-40:])
        text = "".join(lines)
        assert "broker:     python (in-process) mqtt://127.0.0.1:" in text, text
        key = re.search(r"admin key:\s+(\S+)", text)
        api = re.search(r"API:\s+(http://\S+)/api/v1", text)
        assert key is not None, text
        assert api is not None, text
        # The walkthrough's curl, in Python: the parcels of the demo site. The kiosk
        # opened; the parcel is picked up once the door has closed again.
        request = urllib.request.Request(
            f"{api.group(1)}/api/v1/parcels?site=demo",
            headers={"Authorization": f"Bearer {key.group(1)}"},
        )
        deadline = time.monotonic() + 20
        states: set[str] = set()
        while "picked_up" not in states and time.monotonic() < deadline:
            with urllib.request.urlopen(request, timeout=10) as response:
                states = {p["state"] for p in json.loads(response.read())["items"]}
            time.sleep(0.2)
        assert "picked_up" in states, states
        assert "deposited" in states or "picked_up" in states
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
    summary = rest.splitlines()
    assert proc.returncode == 0, rest[-3000:]
    assert "deposited DEMO-" in text
    assert first_pickup is not None
    counts = next(line for line in summary if "events produced" in line)
    produced, stored = map(int, re.findall(r"\d+", counts))
    assert produced == stored, counts
    assert first_pickup < 120
