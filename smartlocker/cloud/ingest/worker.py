"""The ingest worker: gmqtt (MQTT 5) in, batches to the writer, acks after commit.

Several worker processes split the stream with a shared subscription
(``$share/ingest/lockers/+/{events,telemetry,status,acks,reported}``); each keeps a
persistent session (``clean_start`` false, a session expiry, a stable client id)
so that what it had not acknowledged is redelivered when it comes back.

PUBACK only after commit. gmqtt 0.8 with ``optimistic_acknowledgement=False``
would PUBACK when an ``async on_message`` returns, which costs a task per message
and, worse, sends that PUBACK on whatever connection is current when the handler
finishes: after a reconnect the broker may have reused the packet id for another,
uncommitted message. So the worker takes QoS 1 PUBLISH packets from gmqtt's
packet handler directly, remembers (connection, packet id) with each message, and
after the commit writes the PUBACKs of one batch in one go, only on the
connection that received them; messages of a lost connection are left to the
broker's redelivery (and de-duplicated).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import gmqtt
from gmqtt.mqtt.constants import UNLIMITED_RECONNECTS

from smartlocker.protocol import Channel, Receipt, TopicScheme, encode

from .batcher import Batcher
from .intake import Inbound, TopicCache
from .metrics import IngestMetrics
from .writer import Outcome

__all__ = ["BrokerAddress", "GmqttPublisher", "IngestSettings", "IngestWorker", "Sink"]

logger = logging.getLogger(__name__)

_UPLINK = (Channel.EVENTS, Channel.TELEMETRY, Channel.STATUS, Channel.ACKS, Channel.REPORTED)
#: PUBACK with reason "success" and no properties (MQTT 5 §3.4.2.1 allows the short form).
_PUBACK = [b"\x40\x02" + mid.to_bytes(2, "big") for mid in range(65536)]


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"not an mqtt:// or mqtts:// URL: {url!r}")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


@dataclass(frozen=True, slots=True)
class IngestSettings:
    mqtt_url: str
    client_id: str = field(default_factory=lambda: f"ingest-{socket.gethostname()}")
    prefix: str = "lockers"
    share_group: str = "ingest"
    #: How long the broker keeps our session (and queues for it) while we are away.
    session_expiry: int = 24 * 3600
    #: How many unacknowledged QoS 1 messages the broker may send us.
    receive_maximum: int = 20_000
    batch_max: int = 5000
    batch_delay: float = 0.02
    #: At most one receipt per cabinet per interval (they coalesce).
    receipt_interval: float = 0.1
    keepalive: int = 30
    reconnect_delay: float = 1.0


class Sink(Protocol):
    """Where batches go: the database writer (or the benchmark's relay)."""

    def start(self) -> None: ...
    def submit(self, batch: list[Inbound]) -> None: ...
    @property
    def backlog(self) -> int: ...
    def stop(self, timeout: float = 10.0) -> None: ...


class GmqttPublisher:
    """``downlink.Publisher`` over the worker's gmqtt client; callable from any thread."""

    def __init__(self, worker: IngestWorker, loop: asyncio.AbstractEventLoop) -> None:
        self._worker = worker
        self._loop = loop

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self._loop.call_soon_threadsafe(self._worker.publish, topic, payload, qos, retain)


class IngestWorker:
    """One ingest process's MQTT side. Build the sink with :meth:`committed` as callback."""

    def __init__(
        self,
        settings: IngestSettings,
        sink_factory: Callable[[Callable[[Outcome], None]], Sink],
        *,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.scheme = TopicScheme(settings.prefix)
        self.topics = TopicCache(self.scheme)
        self.metrics = metrics or IngestMetrics()
        self.address = BrokerAddress.parse(settings.mqtt_url)
        self._sink = sink_factory(self._committed_threadsafe)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: gmqtt.Client | None = None
        self._batcher: Batcher[Inbound] = Batcher(
            self._flush,
            max_messages=settings.batch_max,
            max_delay=settings.batch_delay,
            busy=lambda: self._sink.backlog > 0,
        )
        self._pending_receipts: dict[str, int] = {}
        self._unacked = 0
        self.connected = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect (retrying), ingest until ``stop`` is set, then shut down in order."""
        self._loop = asyncio.get_running_loop()
        self._sink.start()
        client = self._make_client()
        self._client = client
        receipts = asyncio.ensure_future(self._receipt_loop(stop))
        try:
            await self._connect(client, stop)
            await stop.wait()
        finally:
            receipts.cancel()
            await self._shutdown(client)

    async def _connect(self, client: gmqtt.Client, stop: asyncio.Event) -> None:
        a = self.address
        ctx: ssl.SSLContext | bool = ssl.create_default_context() if a.tls else False
        delay = self.settings.reconnect_delay
        while not stop.is_set():
            try:
                await client.connect(a.host, a.port, ssl=ctx, keepalive=self.settings.keepalive)
                return
            except (OSError, gmqtt.mqtt.handler.MQTTConnectError) as exc:
                logger.warning("broker %s:%d unavailable (%s); retrying", a.host, a.port, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10.0)

    async def _shutdown(self, client: gmqtt.Client) -> None:
        self._batcher.flush()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._sink.stop)
        await asyncio.sleep(0)  # let the last commits' acks run
        self._send_receipts()
        if self._connection_up():
            try:
                await asyncio.wait_for(client.disconnect(), 5)
            except (TimeoutError, OSError) as exc:
                logger.warning("disconnect: %s", exc)
        logger.info("ingest worker %s stopped", self.settings.client_id)

    def _make_client(self) -> gmqtt.Client:
        s = self.settings
        client = gmqtt.Client(
            s.client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            session_expiry_interval=s.session_expiry,
            receive_maximum=s.receive_maximum,
        )
        if self.address.username:
            client.set_auth_credentials(self.address.username, self.address.password)
        client.set_config(
            {"reconnect_retries": UNLIMITED_RECONNECTS, "reconnect_delay": s.reconnect_delay}
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_qos0
        handler = client._package_handler
        if not hasattr(handler, "_handle_qos_1_publish_packet") or not hasattr(
            handler, "current_connection"
        ):
            raise RuntimeError(f"unsupported gmqtt version {gmqtt.__version__}")
        handler._handle_qos_1_publish_packet = self._on_qos1
        self._handler = handler
        return client

    # -- gmqtt callbacks (event loop) -------------------------------------------

    def _on_connect(self, client: gmqtt.Client, session_present: int, rc: int, props: Any) -> None:
        logger.info(
            "connected to %s:%d as %s (session present: %s)",
            self.address.host,
            self.address.port,
            self.settings.client_id,
            bool(session_present),
        )
        # Always (re)subscribe: a broker that lost its state (SIGKILL) lost ours too.
        client.subscribe(
            [
                gmqtt.Subscription(self.scheme.shared(self.settings.share_group, ch), qos=1)
                for ch in _UPLINK
            ]
        )
        self.metrics.connected.set(1)
        self.connected.set()

    def _on_disconnect(self, client: gmqtt.Client, packet: Any, exc: Any = None) -> None:
        logger.warning("disconnected from the broker; gmqtt reconnects")
        self.metrics.connected.set(0)
        self.connected.clear()

    def _on_qos0(
        self, client: gmqtt.Client, topic: str, payload: bytes, qos: int, props: Any
    ) -> int:
        self._batcher.add(Inbound(topic, payload, datetime.now(UTC)))
        return 0

    def _on_qos1(self, mid: int, payload: bytes, topic: str, properties: Any) -> None:
        self._unacked += 1
        self._batcher.add(
            Inbound(topic, payload, datetime.now(UTC), (self._handler.current_connection, mid))
        )

    # -- batches -------------------------------------------------------------------

    def _flush(self, batch: list[Inbound]) -> None:
        self.metrics.messages.inc(len(batch))
        self.metrics.unacked.set(self._unacked)
        self._sink.submit(batch)

    def _committed_threadsafe(self, outcome: Outcome) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._committed, outcome)

    def _committed(self, outcome: Outcome) -> None:
        current = self._handler.current_connection
        acks = []
        for item in outcome.items:
            token = item.token
            if token is None:
                continue
            self._unacked -= 1
            if token[0] is current:
                acks.append(_PUBACK[token[1]])
        if acks and current is not None and not current.is_closing():
            current.send_package(b"".join(acks))
        elif acks:
            logger.info("%d acks dropped with their connection (the broker redelivers)", len(acks))
        if outcome.receipts:
            self._pending_receipts.update(outcome.receipts)

    # -- downlink -----------------------------------------------------------------------

    def _connection_up(self) -> bool:
        conn = self._handler.current_connection if self._client is not None else None
        return conn is not None and not conn.is_closing() and self.connected.is_set()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Publish on the loop thread (use :class:`GmqttPublisher` from others)."""
        if self._client is None or not self._connection_up():
            logger.warning("not connected: %s not published", topic)
            return
        self._client.publish(topic, payload, qos=qos, retain=retain)

    async def _receipt_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.settings.receipt_interval)
            self._send_receipts()

    def _send_receipts(self) -> None:
        if not self._pending_receipts or not self._connection_up():
            return
        pending, self._pending_receipts = self._pending_receipts, {}
        assert self._client is not None
        for cabinet, upto in pending.items():
            receipt = Receipt(cabinet=cabinet, upto_seq=upto)
            topic = str(self.scheme.topic(cabinet, Channel.RECEIPTS))
            self._client.publish(topic, encode(receipt), qos=1, retain=False)
        self.metrics.receipts.inc(len(pending))
