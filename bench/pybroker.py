"""Benchmark: QoS 1 throughput of the Python broker next to Mosquitto.

Each broker runs in its own process (the Python broker in a child Python that
starts ``PythonBroker``), anonymous. One paho MQTT 5 client publishes N QoS 1
messages of 200 bytes with a window of 100 in flight; another, subscribed at QoS 1,
counts them. Reported: messages per second from the first publish to the last
delivery, and the broker process's CPU seconds per 1,000 messages.

    .venv/bin/python bench/pybroker.py --messages 20000
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
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from smartlocker.embedded import MosquittoBroker, free_port

TICK = os.sysconf("SC_CLK_TCK")
_CHILD = """
import sys, threading
from pathlib import Path
from smartlocker.embedded import PythonBroker
broker = PythonBroker(Path(sys.argv[1]), port=int(sys.argv[2]))
broker.start()
print("ready", flush=True)
sys.stdin.read()
broker.stop()
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run(port: int, pid: int, messages: int) -> dict[str, float]:
    done = threading.Event()
    received = 0

    def on_message(_c: object, _u: object, _m: object) -> None:
        nonlocal received
        received += 1
        if received == messages:
            done.set()

    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub", protocol=paho.MQTTv5)
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    sub.subscribe("bench/#", qos=1)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=paho.MQTTv5)
    pub.max_inflight_messages_set(100)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    time.sleep(0.5)
    payload = b"x" * 200
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    for i in range(messages):
        pub.publish(f"bench/{i % 50}/events", payload, qos=1)
    ok = done.wait(300)
    elapsed, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    if not ok:
        raise RuntimeError(f"only {received} of {messages} delivered")
    return {
        "messages": messages,
        "seconds": round(elapsed, 2),
        "msgs_per_s": round(messages / elapsed),
        "broker_cpu_ms_per_1000": round(1000 * cpu / messages * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        with MosquittoBroker(Path(tmp) / "mosquitto") as broker:
            assert broker.pid is not None
            results["mosquitto"] = run(broker.port, broker.pid, args.messages)
        port = free_port()
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(Path(tmp) / "py"), str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            results["python"] = run(port, child.pid, args.messages)
        finally:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(30)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
