"""The whole system on one machine: broker, database, cloud services, virtual cabinets.

Used by ``smartlocker demo`` (and by anyone who wants the real thing running
locally): a private broker with passwords and the contract's ACL (the system's
Mosquitto, or the in-process Python broker where it is not installed); PostgreSQL
(the given URL, or an embedded server); ``smartlocker cloud ingest``, ``cloud api``
and ``cloud workers`` as their own processes, exactly as deployed; and cabinets
provisioned through the API, each the real edge agent on gpiozero mock pins with
a simulated world that opens and closes doors after each pulse: in this process
(with a clock that can be set wrong), or in a process of its own (whose power can
be cut, :mod:`.process_cabinet`). :class:`Stack` injects those faults by name.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
from gpiozero.pins.mock import MockFactory

from smartlocker.cloud.api.auth import Role, create_key
from smartlocker.cloud.db import migrate
from smartlocker.edge_agent import Agent, parse_config
from smartlocker.embedded import MosquittoBroker, PythonBroker, free_port, make_broker
from smartlocker.embedded.postgres import EmbeddedPostgres
from smartlocker.protocol import generate_private_key, private_key_pem

from .api_client import ApiClient, ApiProblem
from .clock import SkewedClock
from .inbox import CodeInbox
from .process_cabinet import ProcessCabinet
from .virtual_cabinet import VirtualWorld

__all__ = ["Stack", "StackError", "VirtualCabinet"]

logger = logging.getLogger(__name__)

CLOUD_USER = "cloud"
#: Compartments of a demo cabinet: (id, size, lock pin, door pin) on a Pi's header.
LAYOUT = (
    ("A1", "s", 5, 17),
    ("A2", "s", 6, 27),
    ("A3", "m", 13, 22),
    ("B1", "m", 19, 23),
    ("B2", "l", 26, 24),
    ("B3", "l", 12, 25),
)
_PINS = {c: (lock, door) for c, _, lock, door in LAYOUT}


class StackError(RuntimeError):
    """A part of the stack did not start; the message says which and shows its log."""


@dataclass
class VirtualCabinet:
    """One provisioned cabinet: the real agent on mock pins, and its world."""

    id: str
    agent: Agent
    world: VirtualWorld
    factory: MockFactory
    clock: SkewedClock

    @property
    def kiosk_url(self) -> str:
        assert self.agent.kiosk is not None
        return self.agent.kiosk.url

    def events_produced(self) -> int:
        cabinet = self.agent.cabinet
        return 0 if cabinet is None else cabinet.store.last_seq

    def stop(self) -> None:
        self.world.stop()
        self.agent.stop("demo over")
        self.factory.reset()


@dataclass
class _Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    out: IO[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.out.close()


@dataclass
class Stack:
    """Start with :meth:`start`, stop with :meth:`stop` (also on any failure)."""

    workdir: Path
    database_url: str | None = None
    api_port: int | None = None
    api_workers: int = 2
    #: Cabinet timings: how soon a pulsed door must open, how long it may stay open.
    open_window_s: float = 5.0
    held_open_s: float = 60.0
    #: ``auto`` (Mosquitto if installed, else the Python broker), ``mosquitto`` or ``python``.
    broker_kind: str = "auto"
    services: list[_Service] = field(default_factory=list)
    cabinets: list[VirtualCabinet] = field(default_factory=list)
    #: Cabinets in processes of their own (power cuts).
    powered: list[ProcessCabinet] = field(default_factory=list)
    broker: MosquittoBroker | PythonBroker | None = None
    inbox: CodeInbox | None = None
    admin_key: str = ""
    api: ApiClient | None = None
    _embedded: EmbeddedPostgres | None = None

    # --- start ------------------------------------------------------------------------

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        cloud_password = secrets.token_urlsafe(16)
        self.broker = make_broker(
            self.broker_kind,
            self.workdir / "broker",
            users={CLOUD_USER: cloud_password},
            cloud_users=[CLOUD_USER],
        )
        self.broker.start()
        logger.info("broker: %r", self.broker)
        # The API provisions cabinets by writing the password file; Mosquitto must then
        # be sent SIGHUP (its pid file), the Python broker re-reads the file by itself.
        reload_env = {}
        if isinstance(self.broker, MosquittoBroker):
            pid_file = self.workdir / "broker" / "mosquitto.pid"
            pid_file.write_text(str(self.broker.pid))
            reload_env["SMARTLOCKER_MOSQUITTO_PID"] = str(pid_file)
        if self.database_url is None:
            self._embedded = EmbeddedPostgres(self.workdir / "postgres")
            self.database_url = self._embedded.start()
        applied = migrate(self.database_url)
        logger.info("database ready (%d migrations applied)", len(applied))
        key = self.workdir / "cloud.pem"
        key.touch(mode=0o600)
        key.write_bytes(private_key_pem(generate_private_key()))
        provider_secret = secrets.token_urlsafe(24)
        self.inbox = CodeInbox(provider_secret)
        self.inbox.start()
        port = self.api_port or free_port()
        env = {
            **os.environ,
            "SMARTLOCKER_DATABASE_URL": self.database_url,
            "SMARTLOCKER_MQTT_URL": (
                f"mqtt://{CLOUD_USER}:{cloud_password}@{self.broker.host}:{self.broker.port}"
            ),
            "SMARTLOCKER_SIGNING_KEY": str(key),
            "SMARTLOCKER_API_BIND": f"127.0.0.1:{port}",
            "SMARTLOCKER_MOSQUITTO_PASSWD": str(self.broker.password_path),
            **reload_env,
            "SMARTLOCKER_DEVICE_MQTT_URL": self.broker.url,
            "SMARTLOCKER_SMS_WEBHOOK_URL": self.inbox.url,
            "SMARTLOCKER_PROVIDER_WEBHOOK_SECRET": provider_secret,
            "PROMETHEUS_MULTIPROC_DIR": str(_empty_dir(self.workdir / "metrics")),
        }
        if not reload_env:
            env.pop("SMARTLOCKER_MOSQUITTO_PID", None)  # whatever the caller's shell had
        self._spawn("ingest", ["cloud", "ingest", "--heartbeat-timeout", "30"], env)
        self._spawn("api", ["cloud", "api", "--workers", str(self.api_workers)], env)
        self._spawn("workers", ["cloud", "workers", "--poll", "0.2", "--first-retry", "1"], env)
        with psycopg.connect(self.database_url) as conn:
            self.admin_key = create_key(conn, name="demo admin", role=Role.ADMIN, sites=None).token
        self.api = ApiClient(f"http://127.0.0.1:{port}", self.admin_key)
        self._wait_ready()

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = self.workdir / f"{name}.log"
        out = open(log, "wb")  # noqa: SIM115 - closed by _Service.stop
        cmd = [sys.executable, "-m", "smartlocker.cli", "--log-level", "INFO", *args]
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.services.append(_Service(name, process, log, out))

    def _wait_ready(self, timeout: float = 60.0) -> None:
        assert self.api is not None
        deadline = time.monotonic() + timeout
        while True:
            for service in self.services:
                if service.process.poll() is not None:
                    tail = service.log.read_text(errors="replace")[-2000:]
                    raise StackError(f"{service.name} exited:\n{tail}")
            try:
                self.api.get("/readyz")
                return
            except ApiProblem:
                if time.monotonic() > deadline:
                    raise StackError("the API did not become ready in time") from None
            time.sleep(0.2)

    # --- a site and its cabinets ----------------------------------------------------------

    def provision(
        self, site: str, site_name: str, cabinets: int, *, processes: Collection[str] = ()
    ) -> None:
        """A site with ``cabinets`` cabinets, each online as a virtual cabinet.

        Those named in ``processes`` run in processes of their own (power cuts).
        """
        try:
            self._provision(site, site_name, cabinets, processes)
        except BaseException:
            self.stop()
            raise

    def _provision(
        self, site: str, site_name: str, cabinets: int, processes: Collection[str]
    ) -> None:
        assert self.api is not None
        self.api.post("/api/v1/sites", {"id": site, "name": site_name, "hold_hours": 72})
        for n in range(1, cabinets + 1):
            name = f"{site}-{n:02d}"
            provisioned = self.api.post(
                "/api/v1/cabinets",
                {
                    "id": name,
                    "site": site,
                    "name": f"{site_name} #{n}",
                    "compartments": [{"id": c, "size": s} for c, s, _, _ in LAYOUT],
                },
            )
            if name in processes:
                self.powered.append(self._start_process_cabinet(provisioned))
            else:
                self.cabinets.append(self._start_cabinet(provisioned))
        deadline = time.monotonic() + 30
        mine = [c for c in self.names() if c.startswith(f"{site}-")]
        while not all(self.api.get(f"/api/v1/cabinets/{c}")["online"] for c in mine):
            if time.monotonic() > deadline:
                raise StackError("cabinets did not come online")
            time.sleep(0.2)

    def _config(
        self, provisioned: dict[str, Any], kiosk_bind: str = "127.0.0.1:0"
    ) -> tuple[str, Path, dict[str, Any]]:
        """The cabinet's id, home directory and agent config (as its TOML file would hold)."""
        creds = provisioned["credentials"]
        cabinet = provisioned["cabinet"]["id"]
        home = self.workdir / "cabinets" / cabinet
        home.mkdir(parents=True, exist_ok=True)
        (home / "cloud.pub").write_text(creds["cloud_public_key_pem"])
        return (
            cabinet,
            home,
            {
                "cabinet": cabinet,
                "mqtt_url": creds["mqtt_url"] or self.broker_url,
                "mqtt_username": creds["mqtt_username"],
                "mqtt_password": creds["mqtt_password"],
                "cloud_public_key": str(home / "cloud.pub"),
                "code_key": creds["code_key_hex"],
                "data_dir": str(home / "data"),
                "kiosk_bind": kiosk_bind,
                "telemetry_interval_s": 10.0,
                "receipt_timeout_s": 5.0,
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 5.0,
                "compartments": [
                    {
                        "id": c["id"],
                        "lock_pin": _PINS[c["id"]][0],
                        "door_pin": _PINS[c["id"]][1],
                        "pulse_ms": 300,
                        "max_pulse_ms": 1000,
                        "debounce_ms": 0,
                        "open_window_s": self.open_window_s,
                        "held_open_s": self.held_open_s,
                    }
                    for c in provisioned["cabinet"]["compartments"]
                ],
            },
        )

    def _start_cabinet(self, provisioned: dict[str, Any]) -> VirtualCabinet:
        cabinet, _home, raw = self._config(provisioned)
        config = parse_config(raw)
        factory = MockFactory()
        clock = SkewedClock()
        agent = Agent(config, pin_factory=factory, clock=clock)
        agent.start()
        world = VirtualWorld(config, factory, open_after_s=0.3, hold_s=1.5)
        world.start()
        return VirtualCabinet(cabinet, agent, world, factory, clock)

    def _start_process_cabinet(self, provisioned: dict[str, Any]) -> ProcessCabinet:
        cabinet, home, raw = self._config(provisioned, f"127.0.0.1:{free_port()}")
        parse_config(raw)  # refuse a bad config here, not in the child
        process = ProcessCabinet(cabinet, raw, home, open_after_s=0.3, hold_s=1.5)
        process.power_on()
        return process

    @property
    def broker_description(self) -> str:
        """Which broker runs where, for people (``mosquitto mqtt://…`` / ``python …``)."""
        if self.broker is None:
            return "none"
        kind = "mosquitto" if isinstance(self.broker, MosquittoBroker) else "python (in-process)"
        return f"{kind} {self.broker.url}"

    @property
    def broker_url(self) -> str:
        assert self.broker is not None
        return self.broker.url

    def cabinet(self, name: str) -> VirtualCabinet:
        return next(c for c in self.cabinets if c.id == name)

    def process_cabinet(self, name: str) -> ProcessCabinet:
        return next(c for c in self.powered if c.id == name)

    def names(self) -> list[str]:
        return [c.id for c in self.cabinets] + [c.id for c in self.powered]

    def kiosks(self, site: str | None = None) -> dict[str, str]:
        """Kiosk URL of every cabinet (of ``site``), by cabinet id."""
        both: list[VirtualCabinet | ProcessCabinet] = [*self.cabinets, *self.powered]
        return {c.id: c.kiosk_url for c in both if site is None or c.id.startswith(f"{site}-")}

    # --- faults, by cabinet name (the scenario's :class:`FaultInjector`) -----------------

    def power_cut(self, name: str) -> None:
        """The cabinet's agent is killed (SIGKILL): only for process cabinets."""
        self.process_cabinet(name).power_cut()

    def power_on(self, name: str) -> None:
        self.process_cabinet(name).power_on()

    def set_clock(self, name: str, offset_s: float) -> None:
        """The cabinet's wall clock runs ``offset_s`` off (negative: behind); 0 puts it right."""
        self.cabinet(name).clock.set_offset(offset_s)

    def wait_drained(self, timeout: float = 20.0) -> bool:
        """Until every event the cabinets numbered is in the database (or the timeout)."""
        deadline = time.monotonic() + timeout
        while self.events_stored() < self.events_produced():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def events_produced(self) -> int:
        """Events the cabinets have numbered so far (their outboxes' last seq)."""
        return sum(c.events_produced() for c in self.cabinets) + sum(
            c.events_produced() for c in self.powered
        )

    def events_stored(self) -> int:
        assert self.database_url is not None
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0]) if row else 0

    # --- stop ----------------------------------------------------------------------------

    def stop(self) -> None:
        for cabinet in reversed(self.cabinets):
            _quietly(cabinet.stop)
        self.cabinets.clear()
        for process in reversed(self.powered):
            _quietly(process.stop)
        self.powered.clear()
        for service in reversed(self.services):
            _quietly(service.stop)
        self.services.clear()
        if self.inbox is not None:
            _quietly(self.inbox.stop)
            self.inbox = None
        if self.broker is not None:
            _quietly(self.broker.stop)
            self.broker = None
        if self._embedded is not None:
            _quietly(self._embedded.stop)
            self._embedded = None


def _quietly(stop: Any) -> None:
    try:
        stop()
    except Exception:
        logger.exception("while stopping")


def _empty_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for child in path.iterdir():
        child.unlink()
    return path
