"""The whole system on one machine for end-to-end tests and the benchmark's checks.

A private Mosquitto with passwords and the contract ACL; the API served by gunicorn
(``smartlocker cloud api --workers N``) in a subprocess, which registers provisioned
cabinets in the broker's password file and SIGHUPs it; ingest in-process with the
real rules (:class:`smartlocker.cloud.reactions.Reactions`) and the downlink; and
the real edge agent on gpiozero mock pins with the simulated world that opens and
closes doors after each pulse.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests
from gpiozero.pins.mock import MockFactory

from smartlocker.cloud.downlink import publish_effects
from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.reactions import Reactions
from smartlocker.edge_agent import Agent, parse_config
from smartlocker.embedded import MosquittoBroker, free_port
from smartlocker.protocol import private_key_pem
from smartlocker.simulators.virtual_cabinet import VirtualWorld
from tests.ingest.harness import InProcessIngest

ROOT = Path(__file__).resolve().parents[2]
CLOUD_USER = "cloud"


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@dataclass
class ServedApi:
    """``smartlocker cloud api`` in a subprocess; ``call`` speaks HTTP to it."""

    base: str
    process: subprocess.Popen[bytes]
    log: Path
    session: requests.Session = field(default_factory=requests.Session)

    def call(
        self,
        method: str,
        path: str,
        key: str,
        body: Any = None,
        *,
        fresh: bool = False,
        **params: Any,
    ) -> requests.Response:
        """One request (``fresh``: on a new connection, so any worker may take it)."""
        return (requests if fresh else self.session).request(
            method,
            self.base + path,
            json=body,
            params=params or None,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    def stop(self) -> None:
        self.session.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # gunicorn: quick shutdown
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_broker(workdir: Path) -> tuple[MosquittoBroker, str, Path]:
    """A broker with a cloud account; returns it, the cloud password and its pid file."""
    password = secrets.token_urlsafe(16)
    broker = MosquittoBroker(workdir, users={CLOUD_USER: password}, cloud_users=[CLOUD_USER])
    broker.start()
    pid_file = workdir / "mosquitto.pid"
    pid_file.write_text(str(broker.pid))
    return broker, password, pid_file


def serve_api(
    tmp: Path,
    *,
    database_url: str,
    mqtt_url: str,
    signing_key: Path,
    broker: MosquittoBroker | None = None,
    pid_file: Path | None = None,
    workers: int = 2,
    threads: int = 8,
    extra_env: dict[str, str] | None = None,
) -> ServedApi:
    port = free_port()
    env = {
        **os.environ,
        "SMARTLOCKER_DATABASE_URL": database_url,
        "SMARTLOCKER_MQTT_URL": mqtt_url,
        "SMARTLOCKER_SIGNING_KEY": str(signing_key),
        "SMARTLOCKER_API_BIND": f"127.0.0.1:{port}",
        "PROMETHEUS_MULTIPROC_DIR": str(_fresh_dir(tmp / "metrics")),
        **(extra_env or {}),
    }
    if broker is not None and pid_file is not None:
        env["SMARTLOCKER_MOSQUITTO_PASSWD"] = str(broker.password_path)
        env["SMARTLOCKER_MOSQUITTO_PID"] = str(pid_file)
    log = tmp / "api.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("smartlocker")),
                "--log-level",
                "WARNING",
                "cloud",
                "api",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    api = ServedApi(f"http://127.0.0.1:{port}", process, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the API exited: {log.read_text()[-3000:]}")
        try:
            return api.session.get(api.base + "/readyz", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # still starting (busy machine)
            return False

    try:
        wait_for(ready, 30, "the API to be ready")
    except BaseException:
        api.stop()  # no orphaned server (and no ResourceWarning in a later test)
        raise
    return api


def _fresh_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for child in path.iterdir():
        child.unlink()
    return path


def signing_key_file(tmp: Path, keys: CloudKeys) -> Path:
    path = tmp / "cloud.pem"
    path.touch(mode=0o600)
    path.write_bytes(private_key_pem(keys.signing_key))
    return path


def start_ingest(broker_url_with_cloud: str, database_url: str, keys: CloudKeys) -> InProcessIngest:
    """Ingest with the real rules, republishing desired states after each commit."""

    def deliver_factory(publisher: Any) -> Callable[[psycopg.Connection[Any], list[Any]], None]:
        def deliver(conn: psycopg.Connection[Any], effects: list[Any]) -> None:
            for effect in effects:
                publish_effects(conn, publisher, keys.signing_key, effect)

        return deliver

    return InProcessIngest(
        broker_url_with_cloud,
        database_url,
        rules=Reactions(keys),
        deliver_factory=deliver_factory,
        batch_delay=0.001,
        receipt_interval=0.02,
        # deadlines and command expiries ride on ingest's periodic sweep (on_tick)
        writer_kw={"sweep_interval": 0.5},
    ).start()


@dataclass
class Cabinet:
    """The real agent on mock pins, in this process, with its simulated world."""

    agent: Agent
    world: VirtualWorld
    factory: MockFactory

    @property
    def kiosk(self) -> str:
        assert self.agent.kiosk is not None
        return self.agent.kiosk.url

    def stop(self) -> None:
        self.world.stop()
        self.agent.stop("test over")
        self.factory.reset()


LOCK_PINS = {"A1": 5, "A2": 6, "A3": 13}
DOOR_PINS = {"A1": 17, "A2": 27, "A3": 22}


def start_cabinet(
    tmp: Path,
    provisioned: dict[str, Any],
    broker: MosquittoBroker,
    *,
    open_after_s: float = 0.01,
    hold_s: float = 0.15,
    pins: dict[str, tuple[int, int]] | None = None,
    pulse_ms: int = 20,
) -> Cabinet:
    """Configure the agent from what provisioning returned, and start it (``pins``:
    compartment → lock pin, door pin; by default those of A1 to A3). The world polls
    the lock pins every 5 ms: on a busy machine a longer ``pulse_ms`` is never missed."""
    pins = pins or {c: (LOCK_PINS[c], DOOR_PINS[c]) for c in LOCK_PINS}
    creds = provisioned["credentials"]
    cabinet = provisioned["cabinet"]["id"]
    public = tmp / f"{cabinet}.pub"
    public.write_text(creds["cloud_public_key_pem"])
    config = parse_config(
        {
            "cabinet": cabinet,
            "mqtt_url": broker.url,
            "mqtt_username": creds["mqtt_username"],
            "mqtt_password": creds["mqtt_password"],
            "cloud_public_key": str(public),
            "code_key": creds["code_key_hex"],
            "data_dir": str(tmp / f"{cabinet}-data"),
            "kiosk_bind": "127.0.0.1:0",
            "telemetry_interval_s": 0.5,
            "receipt_timeout_s": 2.0,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.5,
            "keepalive_s": 5,
            "compartments": [
                {
                    "id": c["id"],
                    "lock_pin": pins[c["id"]][0],
                    "door_pin": pins[c["id"]][1],
                    "pulse_ms": pulse_ms,
                    "max_pulse_ms": max(60, pulse_ms),
                    "debounce_ms": 0,
                    "open_window_s": 2.0,
                    "held_open_s": 5.0,
                }
                for c in provisioned["cabinet"]["compartments"]
            ],
        }
    )
    factory = MockFactory()
    agent = Agent(config, pin_factory=factory)
    agent.start()
    world = VirtualWorld(config, factory, open_after_s=open_after_s, hold_s=hold_s)
    world.start()
    return Cabinet(agent, world, factory)
