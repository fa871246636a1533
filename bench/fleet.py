"""Benchmark: how many simulated cabinets one process holds, and what each costs.

Starts a private Mosquitto, then runs the fleet simulator twice side by side in
one run: with 0 cabinets (the baseline: interpreter and imports) and with N
cabinets sending heartbeats. Memory per cabinet = (RSS_N - RSS_0) / N; CPU per
cabinet = CPU seconds of the N-cabinet process over the window / N. A
subscriber counts the heartbeats that really arrive.

    .venv/bin/python bench/fleet.py --cabinets 2000 --heartbeat 10 --window 60
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from smartlocker.embedded.mosquitto import MosquittoBroker
from smartlocker.protocol import Channel, TopicScheme, generate_private_key, public_key_pem

TICK = os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_fleet(
    url: str, key: Path, cabinets: int, heartbeat: float, prefix: str
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "smartlocker.cli",
        "--log-level",
        "WARNING",
        "simulate",
        "fleet",
        "--mqtt-url",
        url,
        "--public-key",
        str(key),
        "--cabinets",
        str(cabinets),
        "--heartbeat",
        str(heartbeat),
        "--id-prefix",
        prefix,
        "--duration",
        "3600",
    ]
    return subprocess.Popen(cmd)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cabinets", type=int, default=2000)
    parser.add_argument("--heartbeat", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=60.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "cloud.pub"
        key.write_bytes(public_key_pem(generate_private_key()))
        with MosquittoBroker(Path(tmp) / "broker") as broker:
            beats: Counter[str] = Counter()
            lock = threading.Lock()

            def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
                cabinet = json.loads(msg.payload)["cabinet"]
                with lock:
                    beats[cabinet] += 1

            sub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
            sub.on_message = on_message
            sub.connect(broker.host, broker.port)
            sub.subscribe(str(TopicScheme().all_cabinets(Channel.TELEMETRY)), qos=0)
            sub.loop_start()

            baseline = start_fleet(broker.url, key, 0, args.heartbeat, "base")
            fleet = start_fleet(broker.url, key, args.cabinets, args.heartbeat, "sim")
            try:
                # Wait until every cabinet has beaten once: all connected, steady state.
                launched = time.monotonic()
                deadline = launched + 120
                while True:
                    with lock:
                        alive = len(beats)
                    if alive >= args.cabinets or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                connected_after = time.monotonic()
                with lock:
                    beats.clear()
                cpu0, t0 = cpu_s(fleet.pid), time.monotonic()
                time.sleep(args.window)
                cpu1, t1 = cpu_s(fleet.pid), time.monotonic()
                rss_n, rss_0 = rss_mib(fleet.pid), rss_mib(baseline.pid)
                with lock:
                    received = sum(beats.values())
                    distinct = len(beats)
            finally:
                for proc in (fleet, baseline):
                    proc.terminate()
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:  # never leave a fleet running
                        proc.kill()
                        proc.wait()
                sub.loop_stop()
                sub.disconnect()

    n = args.cabinets
    elapsed = t1 - t0
    expected = n * elapsed / args.heartbeat
    print(f"cabinets: {n}, all beating: {distinct == n} ({distinct} seen in the window)")
    print(f"all connected and beating {connected_after - launched:.1f} s after launch")
    print(
        f"heartbeats received in {elapsed:.0f} s: {received} "
        f"(expected {expected:.0f}, ratio {received / expected:.2f})"
    )
    print(
        f"RSS: {rss_n:.1f} MiB with {n} cabinets, {rss_0:.1f} MiB with 0 "
        f"-> {(rss_n - rss_0) * 1024 / n:.1f} KiB per cabinet"
    )
    cpu = cpu1 - cpu0
    print(
        f"CPU: {cpu:.2f} s over {elapsed:.0f} s = {100 * cpu / elapsed:.1f}% of a core "
        f"-> {1e3 * cpu / n / elapsed * 60:.2f} ms per cabinet-minute, "
        f"{1e6 * cpu / max(received, 1):.0f} µs per heartbeat"
    )


if __name__ == "__main__":
    main()
