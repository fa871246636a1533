"""``smartlocker cloud api``: serve the operator REST API with gunicorn."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from typing import Any

import click

# Nothing of smartlocker.cloud.api is imported here: prometheus-client decides at its
# import whether it runs in multiprocess mode, so PROMETHEUS_MULTIPROC_DIR must be set
# before (see the command below).
DEFAULT_BIND = "127.0.0.1:8080"
#: gunicorn's gthread, serving a busy keep-alive connection on its thread.
_WORKER = "smartlocker.cloud.gunicorn_worker.LingeringThreadWorker"

__all__ = ["api"]

logger = logging.getLogger(__name__)


@click.command()
@click.option("--database-url", envvar="SMARTLOCKER_DATABASE_URL", required=True)
@click.option("--mqtt-url", envvar="SMARTLOCKER_MQTT_URL", default=None)
@click.option("--signing-key", envvar="SMARTLOCKER_SIGNING_KEY", default=None)
@click.option("--bind", envvar="SMARTLOCKER_API_BIND", default=DEFAULT_BIND, show_default=True)
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes.")
@click.option("--threads", default=8, show_default=True, help="Threads per worker.")
def api(
    database_url: str,
    mqtt_url: str | None,
    signing_key: str | None,
    bind: str,
    workers: int,
    threads: int,
) -> None:
    """Serve the REST API (gunicorn, N workers; they wake each other through PostgreSQL)."""
    from gunicorn.app.base import BaseApplication

    os.environ["SMARTLOCKER_DATABASE_URL"] = database_url
    if mqtt_url:
        os.environ["SMARTLOCKER_MQTT_URL"] = mqtt_url
    if signing_key:
        os.environ["SMARTLOCKER_SIGNING_KEY"] = signing_key
    os.environ["SMARTLOCKER_API_BIND"] = bind
    # Each dashboard live stream holds a thread: keep half of them for the API.
    os.environ.setdefault("SMARTLOCKER_DASHBOARD_STREAMS", str(max(1, threads // 2)))
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="smartlocker-metrics-")

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", [bind])
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", _WORKER if threads > 1 else "sync")
            self.cfg.set("preload_app", False)  # each worker builds its app after the fork
            self.cfg.set("child_exit", _child_exit)
            self.cfg.set("post_worker_init", _post_worker_init)
            if "control_socket_disable" in self.cfg.settings:
                # gunicorn >= 25.1 opens a control socket in $HOME by default; two
                # servers on one machine would fight over it.
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Any:
            from smartlocker.cloud.api import create_app

            return create_app()

    _Server().run()


def _post_worker_init(worker: Any) -> None:
    """On SIGTERM, end the worker's dashboard streams at once, then shut down as usual.

    gunicorn waits for a worker's open requests before it exits; a live stream would
    otherwise hold it until its next heartbeat found the client gone.
    """
    from smartlocker.cloud.dashboard import feed_of

    previous = signal.getsignal(signal.SIGTERM)
    hub = feed_of(worker.wsgi).hub

    def on_term(signum: int, frame: Any) -> None:
        hub.close()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


def _child_exit(_server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
