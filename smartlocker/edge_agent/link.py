"""The MQTT link (paho-mqtt 2, MQTT 5) between the cabinet and the cloud.

* Client id = cabinet id, ``clean_start=False`` with a session expiry, so the broker
  keeps the subscriptions and queues commands while the cabinet is away.
* Retained last will (``online: false``) and retained birth (``online: true``) on
  ``status``; subscriptions are made in ``on_connect``.
* The agent's worker drives the network between its deliveries (:meth:`Link.step`):
  paho's reads, writes and callbacks run on that one thread, so a command, its ack
  and the PUBACKs cost no hand-off between threads. Only (re)connecting, which can
  block for seconds (DNS, TCP, TLS), runs on a short-lived thread of its own, with
  exponential backoff and jitter between attempts; the worker keeps ticking meanwhile.
* Events are published from the outbox in ``seq`` order. On every (re)connect the
  client's own queue is dropped and everything unreceipted is sent again from the
  database, in order; likewise when no receipt arrived for ``receipt_timeout_s``,
  and then one event further than was ever published, even past the send window.
* Paho callbacks never touch the cabinet's state: they hand deliveries to the
  agent's worker through ``deliver`` (its inbox, read after :meth:`Link.step`
  returns), so no callback waits on the state lock while another thread, holding
  it, waits inside paho (paho calls ``on_publish`` holding its own message lock).
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from smartlocker import __version__
from smartlocker.protocol import Channel, Status, TopicScheme, encode

from .cabinet import Cabinet
from .config import AgentConfig

__all__ = ["Delivery", "Link"]

logger = logging.getLogger(__name__)

#: (kind, payload...) handed to the worker: ("message", channel, payload, retained),
#: ("up", generation), ("puback", mid).
Delivery = tuple[Any, ...]


def _no_op(*_args: Any) -> None:
    pass


class Link:
    """The cabinet's one MQTT connection."""

    def __init__(
        self,
        config: AgentConfig,
        cabinet: Cabinet,
        *,
        deliver: Callable[[Delivery], None],
    ) -> None:
        self.config = config
        self.cabinet = cabinet
        self._deliver = deliver
        self._settings = config.mqtt()
        scheme = TopicScheme(config.topic_prefix)
        self._topics = {ch: str(scheme.topic(config.cabinet, ch)) for ch in Channel}
        self._by_topic = {topic: ch for ch, topic in self._topics.items()}
        self._send_mutex = threading.Lock()
        self._ready = False
        self._generation = 0
        self._sent_upto = 0
        self._floor: int | None = None
        self._last_progress = time.monotonic()
        #: After a receipt timeout: send up to this ``seq`` even past the window (0: none).
        self._probe_upto = 0
        self._ack_mids: dict[int, str] = {}
        #: True while :meth:`pump` publishes acks and records their message ids.
        self._acks_publishing = False
        self._reported_due = 0.0
        self._acks_in_flight: set[str] = set()
        self._stop = threading.Event()
        #: Set by :meth:`wake` and at the end of a connection attempt: ends the worker's
        #: wait while it is not connected.
        self._nudge = threading.Event()
        #: Set by the connector thread once its attempt is over (its error recorded).
        self._attempt_over = threading.Event()
        #: The thread of the connection attempt under way, if any (see :meth:`step`).
        self._connector: threading.Thread | None = None
        self._connect_error: BaseException | None = None
        self._first_connect = True
        self._socket_up = False
        self._backoff = config.reconnect_min_s
        #: ``time.monotonic()`` of the next connection attempt.
        self._connect_at = 0.0
        self._tls_context: ssl.SSLContext | None = None
        self.connects = 0
        #: The ``ts`` of this connection's last will, which its birth repeats.
        self._connection_ts = cabinet.clock.now()
        self._client = self._make_client()

    # -- set-up ---------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        s = self._settings
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.config.cabinet,
            protocol=paho.MQTTv5,
        )
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            context = ssl.create_default_context(
                cafile=str(s.ca_file) if s.ca_file is not None else None
            )
            client.tls_set_context(context)
            self._tls_context = context
        self._set_will(client)
        client.max_inflight_messages_set(50)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        # The worker runs client.loop() (step). Without loop_start() paho would write
        # to the socket from whichever thread publishes, racing the worker's loop
        # (reordered or interleaved packets). With a "register write" hook set,
        # publish() only queues the packet and wakes the loop, which does every write;
        # published from the worker itself, it is written on the loop's next round.
        client.on_socket_register_write = _no_op
        return client

    def _set_will(self, client: paho.Client) -> None:
        """A last will stamped now; the birth of the same connection carries the same ``ts``.

        The cloud ignores a status older than the one it applied (workers sharing
        the stream may reorder them). A will stamped once at start-up would be older
        than every birth after it and so always ignored; stamped before each
        connection attempt and repeated by that connection's birth, it is newer than
        the previous connection's birth and exactly as new as its own.
        """
        self._connection_ts = self.cabinet.clock.now()
        will = Status(
            cabinet=self.config.cabinet,
            online=False,
            agent_version=__version__,
            ts=self._connection_ts,
        )
        client.will_set(self._topics[Channel.STATUS], encode(will), qos=1, retain=True)

    @property
    def connected(self) -> bool:
        return self._ready

    def start(self) -> None:
        """Connect from now on: the worker's next :meth:`step` starts the first attempt."""
        self._connect_at = time.monotonic()

    def stop(self, timeout: float = 3.0) -> None:
        """Publish ``online: false`` (retained), disconnect.

        Called after the worker stopped: this thread drives the network meanwhile.
        """
        self._stop.set()
        connector = self._connector
        if connector is not None:
            connector.join(timeout + 5.0)
        if self._ready:
            offline = Status(
                cabinet=self.config.cabinet,
                online=False,
                agent_version=__version__,
                ts=self.cabinet.clock.now(),
            )
            info = self._client.publish(
                self._topics[Channel.STATUS], encode(offline), qos=1, retain=True
            )
            deadline = time.monotonic() + timeout
            while not info.is_published() and time.monotonic() < deadline and self._ready:
                if self._client.loop(timeout=0.02) != paho.MQTT_ERR_SUCCESS:
                    break
        try:
            # Alone now: let disconnect() write its DISCONNECT packet itself.
            self._client.on_socket_register_write = None
            self._client.disconnect()
        finally:
            self._client._reset_sockets()
            self._ready = False
            self._socket_up = False

    def wake(self) -> None:
        """Make the worker's :meth:`step` return now: another thread queued it work.

        Connected, through paho's own wake-up socket (what ``publish()`` writes to);
        not connected (between attempts, or during one), through an event.
        """
        self._nudge.set()
        wakeup = self._client._sockpairW
        if wakeup is not None:
            with contextlib.suppress(OSError):  # full (a wake-up is pending) or closed
                wakeup.send(b"\0")

    # -- the network, driven by the worker ---------------------------------------

    def step(self, timeout: float) -> None:
        """One round of the network, for at most ``timeout`` seconds.

        Connected: paho reads and writes what is due (its callbacks put deliveries in
        the worker's inbox) and returns as soon as something came or was sent. Not
        connected: waits for the attempt under way, or starts the next one when its
        backoff is over. Never raises: a failure is a lost connection.
        """
        if self._stop.is_set():
            return
        if self._socket_up:
            try:
                rc = self._client.loop(timeout=timeout)
            except Exception:  # paho's state is unknown: start over with a new socket
                logger.exception("network round failed")
                self._client._reset_sockets(sockpair_only=False)
                rc = paho.MQTT_ERR_UNKNOWN
            if rc == paho.MQTT_ERR_SUCCESS:
                if self._ready:
                    self._backoff = self.config.reconnect_min_s
                return
            self._socket_up = False
            self._ready = False
            self._retry_later(f"connection lost ({paho.error_string(rc)})")
            return
        connector = self._connector
        if connector is None:
            wait = self._connect_at - time.monotonic()
            if wait > 0:
                self._nudge.wait(min(timeout, wait))
                self._nudge.clear()
                return
            self._connect_error = None
            self._attempt_over.clear()
            connector = threading.Thread(target=self._connect, name="mqtt-connect", daemon=True)
            self._connector = connector
            connector.start()
        if not self._attempt_over.is_set():
            # Until the attempt ends (it nudges), a wake-up, or the round is over.
            self._nudge.wait(timeout)
            self._nudge.clear()
            if not self._attempt_over.is_set():
                return
        self._connector = None
        error = self._connect_error
        if error is None:
            self._socket_up = True
            return
        s = self._settings
        self._retry_later(f"cannot reach {s.host}:{s.port} ({error})")

    def _retry_later(self, why: str) -> None:
        delay = self._backoff * random.uniform(0.5, 1.0)
        logger.info("%s; next attempt in %.1fs", why, delay)
        self._backoff = min(self._backoff * 2, self.config.reconnect_max_s)
        self._connect_at = time.monotonic() + delay

    def _connect(self) -> None:
        """The connector thread: one attempt (blocking), its error for :meth:`step`."""
        s = self._settings
        try:
            self._set_will(self._client)
            if self._first_connect:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = self.config.session_expiry_s
                self._client.connect(
                    s.host,
                    s.port,
                    keepalive=self.config.keepalive_s,
                    clean_start=False,
                    properties=props,
                )
                self._first_connect = False
            else:
                self._client.reconnect()
        except Exception as exc:  # refused, unreachable, TLS, a bad address: try again
            if not isinstance(exc, OSError | ssl.SSLError):
                logger.exception("connection attempt failed")
            self._client._reset_sockets(sockpair_only=False)
            self._connect_error = exc
        finally:
            self._attempt_over.set()
            self._nudge.set()

    # -- paho callbacks (in step, on the worker; never take the cabinet's lock) ----

    def _on_connect(
        self, client: paho.Client, _u: Any, flags: Any, rc: ReasonCode, _p: Any
    ) -> None:
        if rc.is_failure:
            logger.error("broker refused the connection: %s", rc)
            return
        # Small messages (acks, events) must leave at once: Nagle's algorithm holds
        # each one back waiting for the broker's delayed ACK (40 ms or more).
        sock = client.socket()
        if isinstance(sock, socket.socket):  # also an ssl.SSLSocket
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._send_mutex:
            self._ready = False
            self._generation += 1
            generation = self._generation
            dropped = client.drop_out_messages()
        if dropped:
            logger.debug("dropped %d queued publishes; resending from the database", len(dropped))
        self.connects += 1
        birth = Status(
            cabinet=self.config.cabinet,
            online=True,
            agent_version=__version__,
            ts=self._connection_ts,
        )
        client.publish(self._topics[Channel.STATUS], encode(birth), qos=1, retain=True)
        # Retain-as-published: a retained command is seen as retained even when it is
        # published while we are subscribed, so it can be refused.
        options = SubscribeOptions(qos=1, retainAsPublished=True)
        client.subscribe(
            [
                (self._topics[ch], options)
                for ch in (Channel.COMMANDS, Channel.DESIRED, Channel.RECEIPTS)
            ]
        )
        logger.info(
            "connected to %s:%d (session present: %s)",
            self._settings.host,
            self._settings.port,
            getattr(flags, "session_present", None),
        )
        self._deliver(("up", generation))

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self._ready = False
        logger.info("disconnected: %s", rc)

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, rcs: list[ReasonCode], _p: Any) -> None:
        for code in rcs:
            if code.is_failure:
                logger.error("subscription refused: %s", code)

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        channel = self._by_topic.get(msg.topic)
        if channel is None:
            logger.warning("message on unexpected topic %r ignored", msg.topic)
            return
        self._deliver(("message", channel, bytes(msg.payload), bool(msg.retain)))

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        # Only an ack's PUBACK means anything to the worker (it marks the ack sent);
        # the others (events, telemetry, reported, status) would only wake it up.
        # The flag is read first: if it is down, the round that published this
        # mid (if it was an ack's) has recorded it already.
        if self._acks_publishing or mid in self._ack_mids:
            self._deliver(("puback", mid, not rc.is_failure))

    # -- worker side (called with the cabinet's lock held) -----------------------------

    def link_up(self, generation: int) -> None:
        """The connection ``generation`` is up: resend everything from the database."""
        with self._send_mutex:
            if generation != self._generation:
                return
            self._ready = True
            self._ack_mids.clear()
            self._acks_in_flight.clear()
            self._rewind()
        self.cabinet.reported_dirty = self.cabinet.reported_now = True
        self.pump()

    def _rewind(self) -> None:
        first = self.cabinet.store.first_unreceipted()
        self._sent_upto = (first - 1) if first is not None else self.cabinet.store.last_seq
        self._last_progress = time.monotonic()

    def puback(self, mid: int, ok: bool) -> None:
        command_id = self._ack_mids.pop(mid, None)
        if command_id is None:
            return
        self._acks_in_flight.discard(command_id)
        if ok:
            self.cabinet.store.mark_ack_sent(command_id)
        else:
            logger.warning("broker refused the ack of %s", command_id)

    def pump(self) -> None:
        """Publish what waits in the database (acks, events in order, telemetry, reported)."""
        store = self.cabinet.store
        with self._send_mutex:
            if not self._ready:
                return
            # Acks first: someone may be waiting for one; events have their own order
            # (seq) and the cloud needs none between the two topics.
            for command_id, payload in store.unsent_acks():
                if command_id not in self._acks_in_flight:
                    self._acks_publishing = True  # its PUBACK may come before the next line
                    try:
                        info = self._publish(Channel.ACKS, payload)
                        self._ack_mids[info.mid] = command_id
                    finally:
                        self._acks_publishing = False
                    self._acks_in_flight.add(command_id)
            first = store.first_unreceipted()
            floor = first if first is not None else store.last_seq + 1
            room = self.config.send_window - max(0, self._sent_upto - floor + 1)
            room = max(room, self._probe_upto - self._sent_upto)
            if room > 0:
                for seq, payload in store.pending_events(self._sent_upto, room):
                    self._publish(Channel.EVENTS, payload)
                    self._sent_upto = seq
                    self.cabinet.published_upto = max(self.cabinet.published_upto, seq)
            if self._sent_upto >= self._probe_upto:
                self._probe_upto = 0
            for row_id, payload in store.pending_telemetry():
                self._publish(Channel.TELEMETRY, payload)
                store.drop_telemetry(row_id)
            if self._reported_is_due():
                self.cabinet.reported_dirty = self.cabinet.reported_now = False
                self._reported_due = time.monotonic() + self.config.reported_interval_s
                self._publish(Channel.REPORTED, encode(self.cabinet.reported()))

    def _reported_is_due(self) -> bool:
        """A snapshot is waiting and may go: at once if urgent, else once per interval."""
        cabinet = self.cabinet
        return cabinet.reported_dirty and (
            cabinet.reported_now or time.monotonic() >= self._reported_due
        )

    def send_unstored_ack(self, payload: bytes) -> None:
        with self._send_mutex:
            if self._ready:
                self._publish(Channel.ACKS, payload)

    def _publish(self, channel: Channel, payload: bytes) -> paho.MQTTMessageInfo:
        return self._client.publish(
            self._topics[channel], payload, qos=channel.qos, retain=channel.retained
        )

    def check_progress(self) -> None:
        """Resend unreceipted events when receipts stopped coming; a snapshot now due."""
        if self._ready and self._reported_is_due():
            self.pump()
        store = self.cabinet.store
        first = store.first_unreceipted()
        now = time.monotonic()
        if first != self._floor:
            self._floor = first
            self._last_progress = now
        if first is None or not self._ready:
            return
        if now - self._last_progress >= self.config.receipt_timeout_s:
            logger.info(
                "no receipt for %.0fs: resending from seq %d", now - self._last_progress, first
            )
            with self._send_mutex:
                self._rewind()
                # The cloud may hold every event published so far, all their receipts
                # lost (a broker that died with them); one that receipts only what it
                # newly commits would ignore them all. So the resend reaches one event
                # past the highest ever published, as soon as there is one.
                self._probe_upto = self.cabinet.published_upto + 1
            self.pump()
