"""``PythonBroker``: the in-process MQTT broker behind MosquittoBroker's interface.

For machines without ``mosquitto`` (``smartlocker demo --broker python``): it runs
its asyncio loop in a background thread of the process that starts it, on a fixed
port, with the same password file and ACL (``acl_text()``) Mosquitto would get.

What survives what, as with Mosquitto and its persistence file: :meth:`stop` keeps
sessions, queued messages and retained messages (in memory, for the next
:meth:`start` of this object); :meth:`kill` loses them, like SIGKILL before a save.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import ssl
import threading
from collections import deque
from collections.abc import Collection, Mapping
from concurrent.futures import Future
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

from smartlocker.mqtt_passwords import write_password_file
from smartlocker.protocol.ids import validate_cabinet_id
from smartlocker.protocol.topics import TopicScheme

from ..mosquitto import HOST, BrokerError, LoopbackListeners, TlsFiles, acl_text, free_port
from .auth import Acl, PasswordFile
from .server import MqttServer, ServerSettings
from .state import BrokerState

__all__ = ["PythonBroker"]

logger = logging.getLogger(__name__)

_LOG_LINES = 200


class PythonBroker(LoopbackListeners):
    """An MQTT 5 / 3.1.1 broker on 127.0.0.1 in a thread of this process.

    Same constructor and methods as :class:`MosquittoBroker` (``users`` None:
    anonymous and no ACL; otherwise passwords and the contract's ACL).
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
        max_packet_size: int = 4 * 1024 * 1024,
    ) -> None:
        TopicScheme(prefix)
        unknown = set(cloud_users) - set(users or {})
        if unknown:
            raise ValueError(f"cloud users without a password: {sorted(unknown)}")
        self.workdir = Path(workdir).resolve()
        self.prefix = prefix
        self.tls = tls
        self.max_packet_size = max_packet_size
        self._users = dict(users) if users is not None else None
        self._cloud_users = frozenset(cloud_users)
        for name in self._users or {}:
            if name not in self._cloud_users:
                validate_cabinet_id(name)
        self._port = port or free_port()
        self._tls_port = free_port() if tls is not None else None
        self._may_move = port is None
        self._state: BrokerState | None = None
        self._server: MqttServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._log: deque[str] = deque(maxlen=_LOG_LINES)
        self._handler: _TailHandler | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def pid(self) -> int | None:
        """This process, while the broker runs in it."""
        return os.getpid() if self.running else None

    @property
    def password_path(self) -> Path:
        return self.workdir / "passwd"

    @property
    def acl_path(self) -> Path:
        return self.workdir / "acl"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start the loop thread and return once the listeners accept connections.

        On a first start with ports of our choosing, a port taken meanwhile is exchanged
        for another, up to twice (:meth:`_start_exchanging_ports`).
        """
        if self.running:
            raise BrokerError("python broker already running")
        self._start_exchanging_ports(lambda: self._start_once(timeout), _address_in_use)

    def _start_once(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        settings = ServerSettings(max_packet_size=self.max_packet_size)
        if self._users is not None:
            write_password_file(self.password_path, self._users)
            self.acl_path.write_text(acl_text(self.prefix, self._cloud_users))
            settings.passwords = PasswordFile(self.password_path)
            settings.acl = Acl(self.acl_path)
        acl = settings.acl
        if self._state is None:
            self._state = BrokerState(acl.can_read if acl is not None else None)
        self._server = MqttServer(settings, self._state)
        ready: Future[None] = Future()
        name = f"pybroker-{self._port}"
        self._handler = _TailHandler(self._log, name)
        logging.getLogger(__package__).addHandler(self._handler)
        self._thread = threading.Thread(target=self._run, args=(ready,), name=name, daemon=True)
        self._thread.start()
        try:
            ready.result(timeout)
        except BaseException as exc:
            self._join()
            raise BrokerError(
                f"python broker did not start: {exc}", log_tail=self.log_tail()
            ) from exc
        _make_sighup_harmless()
        logger.info("python broker listening on %s", self.url)

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and the listeners; sessions and retained messages stay."""
        self._shutdown(abort=False, timeout=timeout)

    def kill(self) -> None:
        """Drop every connection without a word and forget all state (a crash)."""
        self._shutdown(abort=True, timeout=10.0)
        self._state = None

    def restart(self, timeout: float = 10.0) -> None:
        self.stop()
        self.start(timeout)

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
        return f"<PythonBroker {self.url} {state} in {self.workdir}>"

    # -- provisioning -------------------------------------------------------------------------

    def add_user(self, name: str, password: str, *, timeout: float = 10.0) -> None:
        """Add or update a user; the next CONNECT sees the rewritten password file."""
        if self._users is None:
            raise BrokerError("broker allows anonymous access; it has no users to add to")
        if name not in self._cloud_users:
            validate_cabinet_id(name)
        self._users[name] = password
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_password_file(self.password_path, {name: password})

    def reload(self, timeout: float = 10.0) -> None:
        """Nothing to do: files are re-read when they change (kept for the interface)."""

    def log_tail(self, lines: int = 20) -> str:
        """The last lines this broker logged."""
        return "\n".join(list(self._log)[-lines:])

    # -- the loop thread -------------------------------------------------------------------------

    def _run(self, ready: Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:
            ready.set_exception(exc)
            if self._server is not None:  # a listener that did start: free its port
                loop.run_until_complete(self._server.close(abort=True))
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _listen(self) -> None:
        assert self._server is not None
        await self._server.listen(HOST, self._port)
        if self.tls is not None and self._tls_port is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
            await self._server.listen(HOST, self._tls_port, context)

    def _shutdown(self, *, abort: bool, timeout: float) -> None:
        loop, server = self._loop, self._server
        if loop is not None and server is not None and self.running:

            async def close() -> None:
                await server.close(abort=abort)
                await asyncio.sleep(0)  # let the transports run their connection_lost

            try:
                asyncio.run_coroutine_threadsafe(close(), loop).result(timeout)
            except Exception:
                logger.exception("python broker did not close cleanly")
            loop.call_soon_threadsafe(loop.stop)
        self._join()

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None
        self._loop = None
        self._server = None
        if self._handler is not None:
            logging.getLogger(__package__).removeHandler(self._handler)
            self._handler = None


def _address_in_use(exc: BrokerError) -> bool:
    """Whether a start failed because a listener's port was taken."""
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE


class _TailHandler(logging.Handler):
    """Keeps the last records of one broker's thread for :meth:`PythonBroker.log_tail`."""

    def __init__(self, lines: deque[str], thread_name: str) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines
        self.thread_name = thread_name
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName == self.thread_name:
            self.lines.append(self.format(record))


def _harmless(signum: int, frame: FrameType | None) -> None:
    logger.info("SIGHUP: the python broker re-reads its files on change anyway")


def _make_sighup_harmless() -> None:
    """The API's registrar may SIGHUP "the broker's pid"; here that is us: don't die."""
    if threading.current_thread() is not threading.main_thread():
        return
    current: Any = signal.getsignal(signal.SIGHUP)
    if current == signal.SIG_DFL:
        signal.signal(signal.SIGHUP, _harmless)
