"""The bench's per-process-tree meters read /proc: a child's thread hand-offs and CPU
time are counted."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from smartlocker.bench.cpu import CpuMeter, tree_context_switches

ROUNDS = 2000
#: CPU seconds the grandchild spends after its hand-offs. /proc counts whole clock ticks
#: (10 ms), and 2000 hand-offs alone may take less than one on a fast machine.
BURN_S = 0.2

#: A child whose grandchild passes a token between two threads ROUNDS times when told,
#: spends BURN_S of CPU, then waits to be stopped (a thread that ended would no longer
#: be counted).
_CHILD = textwrap.dedent(
    f"""
    import queue, subprocess, sys, threading, time
    if sys.argv[1:] == ["grandchild"]:
        a, b = queue.SimpleQueue(), queue.SimpleQueue()
        def other():
            for _ in range({ROUNDS}):
                b.put(a.get())
        sys.stdin.readline()
        t = threading.Thread(target=other)
        t.start()
        for i in range({ROUNDS}):
            a.put(i)
            b.get()
        t.join()
        start = time.process_time()
        while time.process_time() - start < {BURN_S}:
            pass
        print("done", flush=True)
        sys.stdin.readline()
    else:
        subprocess.run([sys.executable, "-c", sys.argv[1], "grandchild"])
    """
)


def test_context_switches_of_a_process_tree_count_its_threads_hand_offs() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, _CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        meter = CpuMeter({"tree": child.pid})
        # The grandchild is up once it reads its first line: wait for its process.
        for _ in range(200):
            before = tree_context_switches({"tree": child.pid})["tree"]
            if len(_pids(child.pid)) == 2:
                break
            time.sleep(0.02)
        meter.start()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        cpu = meter.stop(ROUNDS)
        after = tree_context_switches({"tree": child.pid})["tree"]
        # Each round blocks at least one of the two threads until the other has run.
        assert after - before >= ROUNDS
        assert meter.switches["tree"] >= 1.0
        assert meter.switches["total"] >= meter.switches["tree"]
        # Milliseconds per round; two readings in whole ticks may lose one tick between them.
        assert cpu["tree"] >= (BURN_S - 0.02) * 1000 / ROUNDS
        assert cpu["total"] >= cpu["tree"]
    finally:
        child.stdin.write("stop\n")
        child.stdin.close()
        child.wait(10)
        child.stdout.close()


def _pids(root: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(root)], capture_output=True, text=True, check=False
    )
    return [root, *(int(p) for p in out.stdout.split())]
