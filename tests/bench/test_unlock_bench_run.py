"""``smartlocker bench unlock`` end to end, small: each phase alone, and wrong options refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from smartlocker.bench.unlock_bench import UnlockBenchConfig, run_unlock_bench
from smartlocker.cli.bench_unlock_cmd import unlock


@pytest.mark.parametrize(
    ("sequential", "clients"), [(12, 0), (0, 2)], ids=["sequential-only", "concurrent-only"]
)
def test_a_phase_left_out_is_reported_as_none_and_the_other_one_measures(
    tmp_path: Path, sequential: int, clients: int
) -> None:
    out = tmp_path / "report.json"
    report = run_unlock_bench(
        UnlockBenchConfig(
            sequential=sequential,
            clients=clients,
            duration=1.0,
            warmup=3,
            cabinets=1,
            compartments=2,
            api_workers=1,
            api_threads=4,
        ),
        out,
    )
    assert json.loads(out.read_text()) == report
    assert report["failure_kinds"] == {}
    ran, skipped = ("sequential", "concurrent") if sequential else ("concurrent", "sequential")
    assert report[skipped] is None
    phase = report[ran]
    assert phase["failures"] == 0
    assert phase["n"] == sequential if sequential else phase["n"] >= 2
    assert 0 < phase["p50_ms"] <= phase["p99_ms"] <= phase["max_ms"]
    assert phase["cpu_ms_per_unlock"]["total"] > 0
    # Every service takes part in an unlock: each one's threads hand work on.
    switches = phase["context_switches_per_unlock"]
    for service in ("api", "ingest", "cabinets", "broker", "postgres"):
        assert switches[service] > 0, service
    assert switches["total"] >= sum(switches[s] for s in ("api", "ingest", "cabinets"))


@pytest.mark.parametrize(
    "args",
    [["--sequential", "-1"], ["--clients", "-2"], ["--duration", "-1"], ["--cabinets", "0"]],
)
def test_a_negative_or_empty_size_is_a_usage_error_before_anything_starts(args: list[str]) -> None:
    result = CliRunner().invoke(unlock, args)
    assert result.exit_code == 2
    assert "Invalid value" in result.output
