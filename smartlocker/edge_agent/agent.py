"""The agent: wires the cabinet, the MQTT link, the kiosk and one worker thread.

Threads: the worker, which drives the MQTT connection (:meth:`Link.step`: paho's
callbacks queue deliveries), applies the deliveries and the door edges and ticks the
clock; a short-lived one per connection attempt; gpiozero's callback threads, which
only queue door edges for the worker and wake it; each lock's pulse ender; the
kiosk's request threads (take the cabinet's lock). Every change of state happens
under :attr:`Cabinet.mutex`; the worker never holds it while it waits on the network.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from types import FrameType
from typing import Any

from smartlocker.protocol import Channel, ProtocolError, load_public_key

from .cabinet import Cabinet, Clock
from .config import AgentConfig
from .errors import ConfigError
from .kiosk import KioskServer
from .link import Delivery, Link
from .store import Store

__all__ = ["Agent", "run_until_signal"]

logger = logging.getLogger(__name__)

TICK_S = 0.05
#: At most this many more deliveries are applied before what they committed is published.
BURST = 16


class Agent:
    """One running cabinet agent: :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        pin_factory: Any = None,
        clock: Clock | None = None,
        kiosk: bool = True,
    ) -> None:
        self.config = config
        self._pin_factory = pin_factory
        self._clock = clock
        self._with_kiosk = kiosk
        #: Deliveries from paho's callbacks, which run on the worker (in Link.step), and
        #: door edges from gpiozero's threads (``("door", compartment, is_open, at)``).
        self._inbox: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        #: The worker committed something to send: it publishes once it left the lock.
        self._kick_deferred = False
        self.store: Store | None = None
        self.cabinet: Cabinet | None = None
        self.link: Link | None = None
        self.kiosk: KioskServer | None = None

    # -- Outlet for the cabinet -------------------------------------------------

    def kick(self) -> None:
        if threading.current_thread() is self._worker:
            self._kick_deferred = True  # see _publish_deferred
            return
        if self.link is not None:
            self.link.pump()

    def _door_edge(self, compartment: str, is_open: bool, at: float) -> None:
        """A door edge from gpiozero's thread: the worker records it (see
        :meth:`Cabinet.door_input`)."""
        self._inbox.put(("door", compartment, is_open, at))
        link = self.link
        if link is not None and threading.current_thread() is not self._worker:
            link.wake()

    def send_unstored_ack(self, payload: bytes) -> None:
        if self.link is not None:
            self.link.send_unstored_ack(payload)

    def _online(self) -> bool:
        link = self.link
        return link is not None and link.connected

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        if self._pin_factory is None:
            from .hardware import default_pin_factory

            self._pin_factory = default_pin_factory()
        try:
            public_key = load_public_key(self.config.cloud_public_key)
        except (OSError, ProtocolError) as exc:
            raise ConfigError(f"cloud_public_key {self.config.cloud_public_key}: {exc}") from None
        self.store = Store(self.config.database_path)
        try:
            self.cabinet = Cabinet(
                self.config,
                self.store,
                public_key=public_key,
                pin_factory=self._pin_factory,
                clock=self._clock,
                outlet=self,
            )
            self.cabinet.open()
            self.link = Link(self.config, self.cabinet, deliver=self._inbox.put)
            self.cabinet.door_edges = self._door_edge
            if self._with_kiosk:
                self.kiosk = KioskServer(
                    self.config.kiosk_address, self.cabinet, online=self._online
                )
                self.kiosk.start()
            self._worker = threading.Thread(target=self._work, name="agent-worker", daemon=True)
            self.link.start()
            self._worker.start()
        except BaseException:
            self.stop("start failed")
            raise
        logger.info("agent for cabinet %s started", self.config.cabinet)

    def stop(self, reason: str = "signal") -> None:
        """Locks de-energised first, then ``shutdown`` recorded, then offline status."""
        if self.kiosk is not None:
            self.kiosk.stop()
            self.kiosk = None
        if self.cabinet is not None:
            self.cabinet.close(reason)
        self._stop.set()
        if self._worker is not None:
            self._worker.join(10.0)
            self._worker = None
        if self.link is not None:
            self.link.stop()
            self.link = None
        if self.store is not None:
            self.store.close()
            self.store = None
        logger.info("agent for cabinet %s stopped (%s)", self.config.cabinet, reason)

    # -- worker ------------------------------------------------------------------------

    def _work(self) -> None:
        assert self.cabinet is not None
        assert self.link is not None
        cabinet = self.cabinet
        link = self.link
        next_tick = 0.0
        while not self._stop.is_set():
            item = self._take()
            if item is None:
                # Nothing delivered: the network's turn, without the state lock (the
                # kiosk takes it meanwhile). It returns when a packet came or went, a
                # door edge was queued, or after TICK_S; what came is in the inbox now.
                try:
                    link.step(TICK_S)
                except Exception:
                    # step handles the network's failures itself; a bug must not stop
                    # the worker (the traceback is logged).
                    logger.exception("agent worker: network round failed")
                    self._stop.wait(TICK_S)
                item = self._take()
            try:
                with cabinet.mutex:
                    if item is not None:
                        self._handle_burst(item)
                    now = cabinet.clock.monotonic()
                    if now >= next_tick:
                        next_tick = now + TICK_S
                        cabinet.tick()
                        link.check_progress()
            except Exception:
                # A bug or a failing disk must not stop the worker; the traceback is logged.
                logger.exception("agent worker: the clock's tick failed")
            if self._kick_deferred:
                self._kick_deferred = False
                self._publish_deferred(cabinet)

    def _handle_burst(self, item: Delivery) -> None:
        """Apply ``item`` and what else waits (up to :data:`BURST` more), under the lock.

        After a delivery that committed something to send (an unlock), one yield of
        the interpreter lets a door thread with an edge ready queue it: the door that
        opens with the pulse is recorded, and its ack published, together with the
        ``unlocked`` event, the ack first, instead of one publication after the other.
        """
        self._handle_logged(item)
        if self._kick_deferred:
            time.sleep(0)
        for _ in range(BURST):
            more = self._take()
            if more is None:
                return
            self._handle_logged(more)

    def _handle_logged(self, item: Delivery) -> None:
        try:
            self._handle(item)
        except Exception:
            # A bug or a failing disk must not stop the worker, nor cost the deliveries
            # after this one; the traceback is logged.
            logger.exception("agent worker: %r failed", item[0])

    def _take(self) -> Delivery | None:
        """The next delivery, if one is waiting."""
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            return None

    def _publish_deferred(self, cabinet: Cabinet) -> None:
        """Publish what the worker committed (acks first), after it applied a burst."""
        try:
            with cabinet.mutex:
                if self.link is not None:
                    self.link.pump()
        except Exception:
            logger.exception("agent worker: publishing failed")

    def _handle(self, item: Delivery) -> None:
        assert self.cabinet is not None
        assert self.link is not None
        kind = item[0]
        if kind == "message":
            _, channel, payload, retained = item
            if channel is Channel.COMMANDS:
                self.cabinet.handle_command(payload, retained=retained)
            elif channel is Channel.DESIRED:
                self.cabinet.handle_desired(payload, retained=retained)
            elif channel is Channel.RECEIPTS:
                self.cabinet.handle_receipt(payload)
                self.link.pump()
        elif kind == "door":
            _, compartment, is_open, at = item
            self.cabinet.record_door(compartment, is_open, at)
        elif kind == "up":
            self.link.link_up(item[1])
        elif kind == "puback":
            self.link.puback(item[1], item[2])


def run_until_signal(agent: Agent) -> None:
    """Run ``agent`` until SIGTERM or SIGINT, then stop it cleanly."""
    done = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        done.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        agent.start()
        while not done.wait(1.0):
            pass
    finally:
        agent.stop(received[0] if received else "exit")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
