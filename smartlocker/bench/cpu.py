"""CPU time and context switches of process trees, from ``/proc`` (Linux), for "CPU
per unlock" figures.

A benchmark's services are process trees (gunicorn and its workers, the postmaster
and its backends); :class:`CpuMeter` sums user + system time of each tree between two
readings, so a phase can say how many CPU milliseconds each service spent per request,
and the context switches of all their threads (each hand-off from one thread or
process to another is two; on a small virtual machine one costs tens of microseconds
of system time). Processes and threads that ended between the readings are not counted
(their time is lost with them); the trees measured here keep their processes for the
whole run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["CpuMeter", "machine_cpu_seconds", "tree_context_switches", "tree_cpu_seconds"]

logger = logging.getLogger(__name__)

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = Path("/proc")


def _stat(pid: int) -> tuple[int, float] | None:
    """``(ppid, utime + stime in seconds)`` of one process, or None if it is gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _all_processes() -> dict[int, tuple[int, float]]:
    found: dict[int, tuple[int, float]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                found[int(entry.name)] = stat
    return found


def machine_cpu_seconds() -> tuple[float, float]:
    """``(busy, total)`` CPU seconds of the whole machine since boot (``/proc/stat``)."""
    try:
        first = (_PROC / "stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0, 0.0
    ticks = [int(v) for v in first[:8]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / _TICK, sum(ticks) / _TICK


def _descendants(
    roots: Mapping[str, int], table: Mapping[int, tuple[int, float]]
) -> dict[str, list[int]]:
    """Each named root's process and all its descendants in ``table`` (pid: ppid, …)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[str, list[int]] = {}
    for name, root in roots.items():
        found, stack = [], [root]
        while stack:
            pid = stack.pop()
            found.append(pid)
            stack.extend(children.get(pid, ()))
        out[name] = found
    return out


def _switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of ``pid`` so far."""
    total = 0
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except OSError:
        return 0
    for task in tasks:
        try:
            status = (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        for line in status.splitlines():
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split(":", 1)[1])
    return total


def tree_context_switches(roots: Mapping[str, int]) -> dict[str, int]:
    """Context switches so far of all threads of each named process and its descendants."""
    return _switches_of(_descendants(roots, _all_processes()))


def tree_cpu_seconds(roots: Mapping[str, int], *, include_self: bool = False) -> dict[str, float]:
    """CPU seconds used so far by each named process and all its descendants.

    With ``include_self`` the calling process's own time is added as ``"self"``.
    """
    table = _all_processes()
    return _seconds_of(_descendants(roots, table), table, include_self=include_self)


def _switches_of(trees: Mapping[str, list[int]]) -> dict[str, int]:
    return {name: sum(_switches(pid) for pid in pids) for name, pids in trees.items()}


def _seconds_of(
    trees: Mapping[str, list[int]],
    table: Mapping[int, tuple[int, float]],
    *,
    include_self: bool,
) -> dict[str, float]:
    out = {name: sum(table[pid][1] for pid in pids if pid in table) for name, pids in trees.items()}
    if include_self:
        times = os.times()
        out["self"] = times.user + times.system
    return out


def _reading(roots: Mapping[str, int]) -> tuple[dict[str, float], dict[str, int]]:
    """CPU seconds (with ``"self"``) and context switches of each tree, from one scan of
    ``/proc``."""
    table = _all_processes()
    trees = _descendants(roots, table)
    return _seconds_of(trees, table, include_self=True), _switches_of(trees)


class CpuMeter:
    """CPU seconds of named process trees between :meth:`start` and :meth:`stop`."""

    def __init__(self, roots: Mapping[str, int]) -> None:
        self.roots = dict(roots)
        self._before: dict[str, float] = {}
        self._switches: dict[str, int] = {}
        self._machine = (0.0, 0.0)
        #: Context switches per request of each tree, from the last :meth:`stop`.
        self.switches: dict[str, float] = {}

    def start(self) -> None:
        self._before, self._switches = _reading(self.roots)
        self._machine = machine_cpu_seconds()

    def stop(self, requests: int) -> dict[str, float]:
        """Milliseconds of CPU per request for each tree (``"self"``: the client), and total."""
        after, switches_after = _reading(self.roots)
        per = max(1, requests)
        switched = {
            name: count - self._switches.get(name, 0) for name, count in switches_after.items()
        }
        self.switches = {name: round(count / per, 1) for name, count in switched.items()}
        self.switches["total"] = round(sum(switched.values()) / per, 1)
        spent = {name: (after[name] - self._before.get(name, 0.0)) for name in after}
        out = {name: round(seconds * 1000 / per, 3) for name, seconds in spent.items()}
        out["total"] = round(sum(spent.values()) * 1000 / per, 3)
        busy, total = machine_cpu_seconds()
        if total > self._machine[1]:
            # Everything the machine did meanwhile, other users included (a noisy neighbour
            # shows here, not in the trees above).
            out["machine_busy_fraction"] = round(
                (busy - self._machine[0]) / (total - self._machine[1]), 3
            )
        return out
