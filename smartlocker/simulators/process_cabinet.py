"""A virtual cabinet in its own process, so that a power cut can be a real one (SIGKILL).

Why a process: a power cut must be abrupt. Killed with SIGKILL, the agent sends no
MQTT DISCONNECT (the kernel closes its socket, the broker publishes its last
will), never closes its SQLite database (the outbox survives exactly as on a Pi
that loses power; WAL with ``synchronous=FULL`` is what keeps it), and its GPIO
goes with it (the mock pins live in that process: the lock is de-energised, as a
fail-secure lock is without power). No thread of the old agent can linger and
write afterwards, which an in-process imitation could not promise.

The simulated world runs in the same process as the agent (the pins are there),
started by ``python -m smartlocker.simulators.virtual_cabinet``. Power comes back
with :meth:`ProcessCabinet.power_on`: the same config and database, so the agent
boots, records ``boot``, reconnects to its broker session and drains its outbox.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from smartlocker.edge_agent.store import last_seq_given

from ._toml import dumps

__all__ = ["ProcessCabinet", "ProcessCabinetError"]

logger = logging.getLogger(__name__)


class ProcessCabinetError(RuntimeError):
    """The cabinet's process did not start or boot; the message shows its log."""


class ProcessCabinet:
    """One cabinet as a child process: :meth:`power_on`, :meth:`power_cut`, :meth:`stop`."""

    def __init__(
        self,
        cabinet: str,
        config: dict[str, Any],
        home: Path,
        *,
        open_after_s: float = 0.3,
        hold_s: float = 1.5,
    ) -> None:
        self.id = cabinet
        self.home = home
        self.config_path = home / "cabinet.toml"
        self.config_path.write_text(dumps(config))
        self.database = Path(config["data_dir"]) / "agent.sqlite3"
        host, _, port = str(config["kiosk_bind"]).rpartition(":")
        if int(port) == 0:
            raise ValueError("a process cabinet needs a fixed kiosk port (its URL must not move)")
        self.kiosk_url = f"http://{host}:{port}"
        self.log_path = home / "agent.log"
        self._args = ["--open-after", str(open_after_s), "--hold", str(hold_s)]
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        #: Power cuts so far.
        self.cuts = 0

    @property
    def powered(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def power_on(self, timeout: float = 30.0) -> None:
        """Start the agent (and its world); returns once its kiosk answers."""
        if self.powered:
            return
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed when the process ends
        cmd = [
            sys.executable,
            "-m",
            "smartlocker.simulators.virtual_cabinet",
            "--config",
            str(self.config_path),
            "--log-level",
            "INFO",
            *self._args,
        ]
        self._process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._kiosk_answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self._reap(kill=True)
                raise ProcessCabinetError(f"cabinet {self.id} did not boot:\n{tail}")
            time.sleep(0.1)
        logger.info("cabinet %s powered on (pid %d)", self.id, self._process.pid)

    def power_cut(self) -> None:
        """SIGKILL: no DISCONNECT, no database close, no shutdown event; pins gone."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self.cuts += 1
            logger.info("cabinet %s: power cut (pid %d killed)", self.id, self._process.pid)
        self._reap(kill=False)

    def stop(self, timeout: float = 15.0) -> None:
        """A clean shutdown (SIGTERM): locks released, ``shutdown`` recorded, offline."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._reap(kill=False)

    def _reap(self, *, kill: bool) -> None:
        assert self._process is not None
        if kill and self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _kiosk_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.kiosk_url + "/", timeout=1) as response:  # noqa: S310 - local kiosk
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def events_produced(self) -> int:
        """The highest ``seq`` the agent ever gave out, read from its database."""
        if not self.database.exists():
            return 0
        db = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)
        try:
            return last_seq_given(db)
        finally:
            db.close()
