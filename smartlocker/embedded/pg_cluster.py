"""Start and stop a private PostgreSQL cluster with ``scripts/pg-cluster.sh`` (tests and
benchmarks).

The script initialises the data directory on first use and starts the server on a
TCP port of 127.0.0.1. A port from :func:`~.mosquitto.free_port` was free when it was
looked at; another process of the machine (another test worker, another benchmark)
may bind it before the server does. :func:`start_cluster` then starts it again on
another free port, unless the caller named the port (a restart: its URLs name it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .mosquitto import free_port

__all__ = ["start_cluster", "stop_cluster"]

#: What the server logs when its port was taken.
_TAKEN = "Address already in use"


def start_cluster(
    script: Path,
    datadir: Path,
    *,
    port: int | None = None,
    timescaledb: Path | str | None = None,
    quiet: bool = False,
    attempts: int = 3,
) -> tuple[int, str]:
    """Start the cluster in ``datadir``; its port and admin URL (the script's output).

    ``port`` None: a free port, exchanged for another (up to ``attempts`` in all) if
    the server finds it taken. ``timescaledb``: the prefix of a TimescaleDB build to
    preload. The script's progress and errors go to this process's stderr, or with
    ``quiet`` only into the :class:`subprocess.CalledProcessError` raised if it fails
    for good.
    """
    for attempt in range(attempts):
        chosen = port if port is not None else free_port()
        cmd = [str(script), "start", str(datadir), str(chosen)]
        if timescaledb is not None:
            cmd += ["--timescaledb", str(timescaledb)]
        try:
            done = subprocess.run(
                cmd,
                check=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if quiet else None,
                text=True,
            )
        except subprocess.CalledProcessError:
            if port is not None or attempt == attempts - 1 or not _port_was_taken(datadir):
                raise
            continue
        return chosen, done.stdout.strip()
    raise AssertionError("unreachable")  # the last attempt returns or raises


def stop_cluster(script: Path, datadir: Path, *, best_effort: bool = False) -> None:
    """Stop the cluster in ``datadir`` (fast shutdown). With ``best_effort`` (a
    benchmark's teardown) a failure is ignored and the script's output hidden; else it
    raises :class:`subprocess.CalledProcessError`."""
    cmd = [str(script), "stop", str(datadir)]
    if best_effort:
        subprocess.run(cmd, check=False, capture_output=True)
    else:
        subprocess.run(cmd, check=True)


def _port_was_taken(datadir: Path) -> bool:
    log = datadir / "server.log"
    try:
        return _TAKEN in log.read_text(errors="replace")
    except OSError:
        return False
