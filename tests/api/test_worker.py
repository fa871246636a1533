"""The API's gunicorn worker: a busy keep-alive connection stays on its thread, safely.

Served for real (``smartlocker cloud api``, gunicorn, private broker and database):
requests pipelined or spaced, more connections than threads, a quick stop. The
lingering decision itself is checked on real sockets.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from smartlocker.cloud.db import migrate
from smartlocker.cloud.gunicorn_worker import LINGER_S, LingeringThreadWorker
from smartlocker.cloud.keys import CloudKeys
from tests.support.pg import PgCluster

from .stack import CLOUD_USER, ServedApi, serve_api, signing_key_file, start_broker

THREADS = 2
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
#: The worker is the same whatever the database: one flavor is enough.
_ONE_FLAVOR = pytest.mark.parametrize("pg_cluster", ["postgres"], indirect=True)


@pytest.fixture(scope="module")
def served(
    pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory, cloud_keys: CloudKeys
) -> Iterator[ServedApi]:
    with _serving(pg_cluster, tmp_path_factory.mktemp("worker"), cloud_keys) as api:
        yield api


@contextmanager
def _serving(pg_cluster: PgCluster, tmp: Path, cloud_keys: CloudKeys) -> Iterator[ServedApi]:
    """``smartlocker cloud api``, one worker of :data:`THREADS` threads, on a fresh
    database and broker; all three gone afterwards."""
    url = pg_cluster.create_database()
    broker, password, _ = start_broker(tmp / "broker")
    api = None
    try:
        migrate(url)
        api = serve_api(
            tmp,
            database_url=url,
            mqtt_url=f"mqtt://{CLOUD_USER}:{password}@{broker.host}:{broker.port}",
            signing_key=signing_key_file(tmp, cloud_keys),
            workers=1,
            threads=THREADS,
        )
        yield api
    finally:
        if api is not None:
            api.stop()
        broker.stop()
        pg_cluster.drop_database(url)


class _Answers:
    """Reads responses one after another off a socket, keeping what came with the last
    one (pipelined answers may arrive in one segment)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self._buffer += chunk

    def status(self) -> int:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        fields = dict(line.lower().split(": ", 1) for line in head[1:])
        total = end + 4 + int(fields["content-length"])
        while len(self._buffer) < total:
            self._fill()
        del self._buffer[:total]
        return int(head[0].split(" ")[1])


def _connect(api: ServedApi) -> socket.socket:
    host, port = api.base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@_ONE_FLAVOR
def test_requests_sent_together_on_one_connection_are_answered_in_order(
    served: ServedApi,
) -> None:
    with _connect(served) as sock:
        answers = _Answers(sock)
        for _ in range(20):
            sock.sendall(HEALTH + b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n" + HEALTH)
            assert [answers.status() for _ in range(3)] == [200, 404, 200]


@_ONE_FLAVOR
def test_a_connection_quiet_past_the_linger_is_still_served_by_the_main_loop(
    served: ServedApi,
) -> None:
    with _connect(served) as sock:
        answers = _Answers(sock)
        for pause in (0, LINGER_S * 4, LINGER_S / 4, LINGER_S * 4):
            time.sleep(pause)
            sock.sendall(HEALTH)
            assert answers.status() == 200


@_ONE_FLAVOR
def test_more_busy_connections_than_threads_are_all_served(served: ServedApi) -> None:
    """Threads that linger leave one free: no connection waits behind a quiet one."""
    answered: list[int] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with _connect(served) as sock:
                answers = _Answers(sock)
                for i in range(40):
                    sock.sendall(HEALTH)
                    answered.append(answers.status())
                    if i % 10 == 0:
                        time.sleep(LINGER_S / 2)
        except BaseException as exc:  # reported below, with the test's thread
            errors.append(exc)

    clients = [threading.Thread(target=client) for _ in range(THREADS * 3)]
    started = time.monotonic()
    for t in clients:
        t.start()
    for t in clients:
        t.join(60)
    assert not errors
    assert answered == [200] * (40 * THREADS * 3)
    # 240 requests; a thread waiting behind a quiet connection would cost LINGER_S each
    assert time.monotonic() - started < 240 * LINGER_S / 2


@_ONE_FLAVOR
def test_a_stopping_worker_does_not_wait_on_a_lingering_connection(
    pg_cluster: PgCluster, tmp_path: Path, cloud_keys: CloudKeys
) -> None:
    with _serving(pg_cluster, tmp_path, cloud_keys) as api, _connect(api) as sock:
        sock.sendall(HEALTH)
        assert _Answers(sock).status() == 200
        started = time.monotonic()
        api.process.send_signal(signal.SIGTERM)  # graceful stop, connection kept open
        try:
            api.process.wait(10)
        except subprocess.TimeoutExpired:
            api.process.kill()
            raise
        assert time.monotonic() - started < 5


# -- the decision, on real sockets -------------------------------------------------------


def _worker(threads: int = 2, busy: int = 1) -> Any:
    worker = LingeringThreadWorker.__new__(LingeringThreadWorker)
    worker.alive = True
    worker.cfg = SimpleNamespace(threads=threads)
    worker._busy = busy
    worker._busy_lock = threading.Lock()
    return worker


def _conn(sock: socket.socket, buffered: bytes = b"") -> Any:
    unreader = SimpleNamespace(buf=SimpleNamespace(getvalue=lambda: buffered))
    return SimpleNamespace(sock=sock, is_http2=False, parser=SimpleNamespace(unreader=unreader))


def test_the_thread_keeps_a_connection_whose_next_request_comes_within_the_linger() -> None:
    server, client = socket.socketpair()
    with server, client:
        timer = threading.Timer(LINGER_S / 5, client.sendall, (HEALTH,))
        timer.start()
        assert _worker()._next_request_comes(_conn(server)) is True
        timer.join()
        assert server.recv(100) == HEALTH  # peeked, not taken: the parser reads it whole
        assert server.gettimeout() is None  # blocking again, as gunicorn expects


def test_a_quiet_connection_goes_back_after_the_linger() -> None:
    server, client = socket.socketpair()
    with server, client:
        started = time.monotonic()
        assert _worker()._next_request_comes(_conn(server)) is False
        assert LINGER_S * 0.9 <= time.monotonic() - started < LINGER_S * 10
        assert server.gettimeout() is None


def test_no_linger_when_it_would_take_the_last_free_thread_or_the_worker_stops() -> None:
    server, client = socket.socketpair()
    with server, client:
        client.sendall(HEALTH)  # even with a request waiting: let another thread take it
        assert _worker(threads=2, busy=2)._next_request_comes(_conn(server)) is False
        stopping = _worker()
        stopping.alive = False
        assert stopping._next_request_comes(_conn(server)) is False


def test_a_request_already_read_ahead_is_served_at_once_and_a_closed_peer_is_not() -> None:
    server, client = socket.socketpair()
    with server, client:
        assert _worker(busy=2)._next_request_comes(_conn(server, buffered=HEALTH)) is True
        client.close()
        assert _worker()._next_request_comes(_conn(server)) is False
