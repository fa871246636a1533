"""``bench/agent_roundtrip.py``, small: the three cabinets answer every command, the
agent and the duties cabinet send their three events per unlock, and the report
compares the agent with the others round by round."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_agent_the_duties_and_the_floor_each_ack_every_command(tmp_path: Path) -> None:
    out = tmp_path / "agent.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "agent_roundtrip.py"),
            *("--unlocks", "30", "--inflight", "4", "--rounds", "2", "--out", str(out)),
        ],
        timeout=180,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert len(report["rounds"]) == 2
    for turn in report["rounds"]:
        for kind in ("agent", "duties", "floor"):
            # A run that missed an ack raises (no report): every command was answered.
            assert turn[kind]["sequential"]["inflight"] == 1
            assert turn[kind]["inflight"]["inflight"] == 4
            for mode in ("sequential", "inflight"):
                figures = turn[kind][mode]
                assert figures["unlocks_per_s"] > 0
                assert {"cabinet", "broker"} <= figures["cpu_ms_per_unlock"].keys()
        # unlocked, door_opened, door_closed for each of the 100 + 2 x 30 commands; the
        # agent also reports its boot.
        assert turn["duties"]["events_per_command"] == 3.0
        assert turn["agent"]["events_per_command"] >= 3.0
        assert turn["floor"]["events_per_command"] == 0.0
        for ratios in (turn["agent_over_floor"], turn["agent_over_duties"]):
            assert ratios["sequential"]["p50"] > 0
            assert ratios["inflight"]["unlocks_per_s"] > 0
