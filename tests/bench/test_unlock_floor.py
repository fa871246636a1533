"""``bench/unlock_floor.py``, small: every request is answered through the whole chain."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_floor_answers_every_request_after_the_cabinets_ack(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "unlock_floor.py"),
            *("--sequential", "15", "--clients", "2", "--duration", "1", "--out", str(out)),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    report = json.loads(out.read_text())
    # A request answers 200 only once its own ack's NOTIFY came back (else the run fails).
    assert report["sequential"]["n"] == 15
    assert report["concurrent"]["n"] > 0
    # Every service is measured (CPU is read in clock ticks: a short run may read 0).
    services = {"api", "cabinet", "ingest", "broker", "postgres"}
    for phase in ("sequential", "concurrent"):
        assert services <= report[phase]["cpu_ms_per_unlock"].keys()
        assert services <= report[phase]["context_switches_per_unlock"].keys()
