"""Run a private Mosquitto broker in a work directory.

Tests, benchmarks and ``smartlocker demo`` need a real broker they own: on a free
port, with its own persistence, password file and ACL, and which they can stop,
kill and restart to exercise reconnects. The ACL written here is CONTRACT.md's
cabinet rule, so tests of it test what production is told to deploy.
"""

from __future__ import annotations

import getpass
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from smartlocker.protocol.ids import validate_cabinet_id
from smartlocker.protocol.topics import Channel, TopicScheme

__all__ = ["BrokerError", "LoopbackListeners", "MosquittoBroker", "TlsFiles", "free_port"]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Persistent sessions of slow consumers must not drop messages under load.
MAX_QUEUED_MESSAGES = 100_000
_RUNNING_MARK = " running"
_LOG_TAIL_LINES = 20


class BrokerError(RuntimeError):
    """Mosquitto could not be started, reloaded or configured; ``log_tail`` says why."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(
            f"{message}\n--- mosquitto log tail ---\n{log_tail}" if log_tail else message
        )
        self.log_tail = log_tail


#: Linux's default range of local ports for outgoing connections, if /proc cannot say.
_EPHEMERAL_DEFAULT = (32768, 60999)
#: Ports below this are left to well-known and registered services.
_LOWEST = 10000
_random = random.SystemRandom()  # not the random module: tests may seed that one


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now.

    Taken from outside the kernel's range of ports for outgoing connections when that
    leaves room: a port from inside it may become the local port of some process's
    connection before our server binds it (a CI run failed so), which no port outside
    it can. Other callers of this function may still take it first: the brokers and
    the database cluster exchange a port taken before their first start.
    """
    low, high = _ephemeral_range()
    spans = [r for r in (range(_LOWEST, low), range(high + 1, 65536)) if r]
    for _ in range(100 if spans else 0):
        span = _random.choices(spans, weights=[len(r) for r in spans])[0]
        port = _random.choice(span)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue  # someone has it: draw again
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))  # no room outside the range (or all of it taken)
        chosen: int = sock.getsockname()[1]
        return chosen


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _EPHEMERAL_DEFAULT


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a TLS listener: the CA clients trust, and the server's cert and key."""

    ca: Path
    cert: Path
    key: Path


class LoopbackListeners:
    """The addresses of a private broker on loopback: a plain port and maybe a TLS one.

    Shared by :class:`MosquittoBroker` and the in-process ``PythonBroker``, which set
    ``_port``, ``_tls_port``, ``_may_move`` and ``workdir``.
    """

    _port: int
    _tls_port: int | None
    #: Ports we chose may be chosen again until the first start succeeds (after it,
    #: clients know them: a restart keeps them).
    _may_move: bool
    workdir: Path

    @property
    def host(self) -> str:
        """Where the broker listens (loopback only)."""
        return HOST

    @property
    def port(self) -> int:
        """The plain MQTT port."""
        return self._port

    @property
    def tls_port(self) -> int | None:
        """The MQTT-over-TLS port, or None without TLS."""
        return self._tls_port

    @property
    def url(self) -> str:
        """The plain listener as ``mqtt://host:port`` (no credentials)."""
        return f"mqtt://{HOST}:{self._port}"

    @property
    def tls_url(self) -> str | None:
        """The TLS listener as ``mqtts://host:port``, or None without TLS."""
        return None if self._tls_port is None else f"mqtts://{HOST}:{self._tls_port}"

    def _start_exchanging_ports(
        self, start_once: Callable[[], None], port_taken: Callable[[BrokerError], bool]
    ) -> None:
        """``start_once``; on a first start with ports of our choosing, a port taken
        meanwhile (``port_taken`` tells from the start's error) is exchanged for another,
        up to twice: :func:`free_port` only finds one free, and another process of the
        machine may bind it first."""
        for attempt in range(3):
            try:
                start_once()
            except BrokerError as exc:
                if not (self._may_move and attempt < 2 and port_taken(exc)):
                    raise
                logger.info("a port of the broker in %s was taken; choosing others", self.workdir)
                self._port = free_port()
                self._tls_port = None if self._tls_port is None else free_port()
                continue
            self._may_move = False
            return


class MosquittoBroker(LoopbackListeners):
    """A Mosquitto process listening on 127.0.0.1, configured from Python.

    With ``users`` None anyone may connect and publish anywhere (demo and benchmark
    mode). With ``users`` the broker requires a password, ``cloud_users`` may read and
    write everything under ``prefix`` and every other user is a cabinet limited to
    its own topics. Ports are chosen once, so they survive :meth:`restart`.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        prefix: str = "lockers",
        users: Mapping[str, str] | None = None,
        cloud_users: Collection[str] = (),
        tls: TlsFiles | None = None,
        executable: str | None = None,
    ) -> None:
        TopicScheme(prefix)  # validates the prefix before it reaches the ACL
        unknown = set(cloud_users) - set(users or {})
        if unknown:
            raise ValueError(f"cloud users without a password: {sorted(unknown)}")
        self.workdir = Path(workdir).resolve()
        self.prefix = prefix
        self.tls = tls
        self._users = dict(users) if users is not None else None
        self._cloud_users = frozenset(cloud_users)
        for name in self._users or {}:
            if name not in self._cloud_users:
                validate_cabinet_id(name)
        self._executable = executable or _find("mosquitto")
        self._port = port or free_port()
        self._tls_port = free_port() if tls is not None else None
        self._may_move = port is None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def config_path(self) -> Path:
        """The generated ``mosquitto.conf``."""
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        """Mosquitto's own log file (appended to across restarts)."""
        return self.workdir / "mosquitto.log"

    @property
    def password_path(self) -> Path:
        """The hashed password file (only with ``users``)."""
        return self.workdir / "passwd"

    @property
    def acl_path(self) -> Path:
        """The ACL file (only with ``users``)."""
        return self.workdir / "acl"

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Spawn mosquitto and return once every listener accepts connections.

        On a first start with ports of our choosing, a port taken meanwhile is exchanged
        for another, up to twice (:meth:`_start_exchanging_ports`).
        """
        log_offset = 0

        def start_once() -> None:
            nonlocal log_offset
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._start_once(timeout, log_offset)

        self._start_exchanging_ports(
            start_once, lambda _: "Address already in use" in self._log_text(log_offset)
        )

    def _start_once(self, timeout: float, log_offset: int) -> None:
        """One start; ``log_offset``: where this start's lines begin in the log."""
        if self.running:
            raise BrokerError(f"mosquitto already running (pid {self.pid})")
        self._reap()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        with open(self.workdir / "mosquitto.stderr", "ab") as stderr:
            # A session of its own: a terminal's Ctrl-C reaches the owner, which then
            # stops the broker in order (and lets it save its persistence file).
            self._process = subprocess.Popen(
                [self._executable, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        logger.debug("mosquitto pid %d starting in %s", self._process.pid, self.workdir)
        try:
            self._wait_ready(log_offset, timeout)
        except BaseException:
            self.kill()
            raise
        logger.info("mosquitto pid %d listening on %s", self._process.pid, self.url)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait: mosquitto saves retained messages and sessions first."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL and wait: like a power cut, whatever was not saved is lost."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop (if running) and start again on the same ports."""
        self.stop()
        self.start(timeout)

    @property
    def pid(self) -> int | None:
        """The process id while one was started."""
        return None if self._process is None else self._process.pid

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<MosquittoBroker {self.url} {state} in {self.workdir}>"

    # -- provisioning ----------------------------------------------------------

    def add_user(self, name: str, password: str, *, timeout: float = 10.0) -> None:
        """Add or update a user without a restart (new cabinets get provisioned live).

        The name is a cabinet unless it was given in ``cloud_users``.
        """
        if self._users is None:
            raise BrokerError("broker allows anonymous access; it has no users to add to")
        if name not in self._cloud_users:
            validate_cabinet_id(name)
        self._users[name] = password
        # The whole file is rewritten with -U rather than `-b name password`, which
        # would show the password to anyone running ps.
        self._write_passwords()
        if self.running:
            self.reload(timeout)

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP: re-read passwords and ACL; returns once mosquitto has done so."""
        process = self._process
        if process is None or process.poll() is not None:
            raise BrokerError("mosquitto is not running", log_tail=self.log_tail())
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        process.send_signal(signal.SIGHUP)
        # Mosquitto is single-threaded: once the line is logged, the reload finishes
        # before it reads the next packet, so a client connecting after this sees it.
        deadline = time.monotonic() + timeout
        while "Reloading config." not in self._log_text(offset):
            if process.poll() is not None or time.monotonic() > deadline:
                raise BrokerError("mosquitto did not reload", log_tail=self.log_tail())
            time.sleep(0.01)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the log and of stderr, for error messages."""
        parts = []
        for path in (self.log_path, self.workdir / "mosquitto.stderr"):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append("\n".join(text))
        return "\n".join(p for p in parts if p)

    # -- internals -------------------------------------------------------------

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("mosquitto pid %d ignored %s; killing it", process.pid, sig.name)
                process.kill()
                process.wait()
        logger.debug("mosquitto pid %d exited with %s", process.pid, process.returncode)
        self._process = None

    def _reap(self) -> None:
        if self._process is not None:
            self._process.wait()
            self._process = None

    def _wait_ready(self, log_offset: int, timeout: float) -> None:
        assert self._process is not None
        ports = [self._port] + ([self._tls_port] if self._tls_port is not None else [])
        deadline = time.monotonic() + timeout
        # "running" is logged after every listener is bound, so a port some other
        # process grabbed meanwhile cannot pass for ours.
        while _RUNNING_MARK not in self._log_text(log_offset) or not all(
            _accepts(p) for p in ports
        ):
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise BrokerError(
                    f"mosquitto exited with code {code} during start", log_tail=self.log_tail()
                )
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"mosquitto not ready on {ports} after {timeout}s", log_tail=self.log_tail()
                )
            time.sleep(0.01)

    def _log_text(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _write_config(self) -> None:
        lines = [
            "# Generated by smartlocker.embedded.mosquitto; edits are overwritten.",
            "per_listener_settings false",
            f"listener {self._port} {HOST}",
        ]
        if self.tls is not None:
            lines += [
                f"listener {self._tls_port} {HOST}",
                f"cafile {self.tls.ca.resolve()}",
                f"certfile {self.tls.cert.resolve()}",
                f"keyfile {self.tls.key.resolve()}",
                "require_certificate false",
                "tls_version tlsv1.2",
            ]
        lines += [
            # Run as whoever we are (as root mosquitto would switch to "mosquitto",
            # who cannot write the work directory).
            f"user {getpass.getuser()}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "persistence_file mosquitto.db",
            "set_tcp_nodelay true",
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if self._users is None:
            lines.append("allow_anonymous true")
        else:
            self._write_passwords()
            self.acl_path.write_text(acl_text(self.prefix, self._cloud_users))
            lines += [
                "allow_anonymous false",
                f"password_file {self.password_path}",
                f"acl_file {self.acl_path}",
            ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _write_passwords(self) -> None:
        assert self._users is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        plain = "".join(f"{name}:{password}\n" for name, password in self._users.items())
        for name, password in self._users.items():
            if ":" in name or "\n" in name + password:
                raise ValueError(f"user {name!r}: ':' and newlines cannot be stored")
        # Entries others added to the file while we ran (a provisioning API writes
        # hashed entries itself) survive a restart.
        kept = []
        if self.password_path.exists():
            for line in self.password_path.read_text().splitlines():
                name = line.split(":", 1)[0]
                if line.strip() and name not in self._users:
                    kept.append(line + "\n")
        fresh = self.password_path.with_suffix(".new")
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(plain)
        _run_passwd(["-U", str(fresh)])  # hashes our plain entries only
        with open(fresh, "a") as f:
            f.writelines(kept)
        fresh.replace(self.password_path)


def acl_text(prefix: str, cloud_users: Collection[str]) -> str:
    """The ACL file of CONTRACT.md: cabinets touch only their own topics."""
    lines = ["# Generated by smartlocker.embedded.mosquitto.", ""]
    for name in sorted(cloud_users):
        lines += [f"user {name}", f"topic readwrite {prefix}/#", ""]
    # Patterns apply to every user, cloud users included; %u is the username, which
    # CONTRACT.md makes the cabinet id.
    for channel in Channel:
        access = "write" if channel.uplink else "read"
        lines.append(f"pattern {access} {prefix}/%u/{channel.value}")
    return "\n".join(lines) + "\n"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _find(program: str) -> str:
    for candidate in (shutil.which(program), f"/usr/sbin/{program}", f"/usr/local/sbin/{program}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerError(f"{program} not found; install the mosquitto package")


def _run_passwd(args: list[str]) -> None:
    exe = _find("mosquitto_passwd")
    result = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"mosquitto_passwd failed: {result.stderr.strip() or result.stdout}")
