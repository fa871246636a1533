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
import os
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import gmqtt
from gmqtt.mqtt.constants import UNLIMITED_RECONNECTS
from gmqtt.mqtt.package import Package

from smartlocker.gmqtt_flow import free_ids
from smartlocker.protocol import Channel, TopicScheme

from .batcher import Batcher
from .intake import Inbound, TopicCache
from .metrics import IngestMetrics
from .writer import Outcome

__all__ = ["BrokerAddress", "GmqttPublisher", "IngestSettings", "IngestWorker", "Sink"]

logger = logging.getLogger(__name__)

_UPLINK = (Channel.EVENTS, Channel.TELEMETRY, Channel.STATUS, Channel.ACKS, Channel.REPORTED)
#: PUBACK with reason "success" and no properties (MQTT 5 §3.4.2.1 allows the short form).
_PUBACK = [b"\x40\x02" + mid.to_bytes(2, "big") for mid in range(65536)]
#: Publishes waiting for the broker (while disconnected) at most.
OUTBOX_LIMIT = 100_000
_UNSTAMPED = datetime.min.replace(tzinfo=UTC)
_RECEIPT = '{"v":1,"id":"%s","ts":"%s","cabinet":"%s","type":"receipt","upto_seq":%d}'
_ACKS_SUFFIX = "/" + Channel.ACKS.value


def receipt_payload(message_id: str, ts: str, cabinet: str, upto_seq: int) -> bytes:
    """The wire form of a :class:`~smartlocker.protocol.Receipt` (fast path)."""
    return (_RECEIPT % (message_id, ts, cabinet, upto_seq)).encode()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, b = divmod(n, 128)
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


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
    receipt_interval: float = 0.2
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
        ack_lane_factory: Callable[[Callable[[Outcome], None]], Sink] | None = None,
    ) -> None:
        self.settings = settings
        self.scheme = TopicScheme(settings.prefix)
        self.topics = TopicCache(self.scheme)
        self.metrics = metrics or IngestMetrics()
        self.address = BrokerAddress.parse(settings.mqtt_url)
        self._sink = sink_factory(self._committed_threadsafe)
        #: Where acks go at once, unbatched (.acklane); None: they are urgent batch items.
        self._ack_lane = (
            ack_lane_factory(self._committed_threadsafe) if ack_lane_factory is not None else None
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: gmqtt.Client | None = None
        self._batcher: Batcher[Inbound] = Batcher(
            self._flush,
            max_messages=settings.batch_max,
            max_delay=settings.batch_delay,
            busy=lambda: self._sink.backlog > 0,
        )
        self._pending_receipts: dict[str, int] = {}
        self._receipt_prefix = os.urandom(6).hex()
        self._receipt_counter = 0
        self._outbox: deque[tuple[str, bytes, int, bool]] = deque()
        self._unacked = 0
        self.connected = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect (retrying), ingest until ``stop`` is set, then shut down in order."""
        self._loop = asyncio.get_running_loop()
        self._sink.start()
        if self._ack_lane is not None:
            self._ack_lane.start()
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
        if self._ack_lane is not None:
            await loop.run_in_executor(None, self._ack_lane.stop)
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
        # The hot path: PUBLISH packets parsed here, everything else by gmqtt.
        self._gmqtt_packet = handler._handle_packet
        handler._handle_packet = self._on_packet
        # Each PUBACK of ours frees a slot of the broker's Receive Maximum: refill it.
        handle_puback = handler._handle_puback_packet

        def on_puback(cmd: int, packet: bytes) -> None:
            handle_puback(cmd, packet)
            if self._outbox:
                self._pump()

        handler._handle_puback_packet = on_puback
        self._handler = handler
        create_connection = client._create_connection

        async def create_and_take_reads(*args: Any, **kwargs: Any) -> Any:
            conn = await create_connection(*args, **kwargs)
            self._take_reads(conn)
            return conn

        client._create_connection = create_and_take_reads
        return client

    def _take_reads(self, conn: Any) -> None:
        """Parse what ``conn`` receives in :meth:`_read_packets`, straight from the socket.

        gmqtt feeds every read through an ``asyncio.StreamReader`` into a reader
        task, makes a ``Package`` per packet, stamps the time and calls the handler
        for each: at tens of thousands of PUBLISH packets a second that machinery
        costs more than the messages' own work. Done as soon as the connection
        exists, before CONNECT is sent, so no byte took gmqtt's way (its reader
        task then only waits for the end of the connection). If gmqtt's layout is
        not the one expected, its reader stays and :meth:`_on_packet` still applies.
        """
        protocol = getattr(conn, "_protocol", None)
        transport = getattr(conn, "_transport", None)
        if protocol is None or transport is None or not hasattr(conn, "_last_data_in"):
            logger.warning("gmqtt %s: its own packet reader stays in use", gmqtt.__version__)
            return
        rest = b""

        def data_received(data: bytes) -> None:
            nonlocal rest
            buf = rest + data if rest else data
            used = self._read_packets(conn, buf)
            if used < 0:
                logger.warning("malformed packet from the broker; closing the connection")
                rest = b""
                transport.close()
                return
            rest = buf[used:] if used < len(buf) else b""

        protocol.data_received = data_received

    # -- gmqtt callbacks (event loop) -------------------------------------------

    def _on_connect(self, client: gmqtt.Client, session_present: int, rc: int, props: Any) -> None:
        logger.info(
            "connected to %s:%d as %s (session present: %s)",
            self.address.host,
            self.address.port,
            self.settings.client_id,
            bool(session_present),
        )
        if not session_present:
            # The broker forgot our session (it was killed): gmqtt dropped the QoS 1
            # messages it had stored for replay, but not their packet ids, which would
            # stay "in flight" forever and shrink the Receive Maximum window to zero.
            ids = self._handler.id_generator
            stored = {mid for mid, _ in client._persistent_storage.get_all()}
            ids._used_ids.intersection_update(stored)
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
        self._batcher.add(Inbound(topic, payload, _UNSTAMPED))
        return 0

    def _read_packets(self, conn: Any, data: bytes) -> int:
        """The packets of ``data`` read on ``conn``: how much of ``data`` was used.

        Complete packets only (the rest waits for more data); QoS 0/1 PUBLISH
        packets of the simple kind (see :meth:`_on_packet`) go straight into the
        batch, everything else to gmqtt as it would have. -1: a malformed length.
        """
        if self._handler.current_connection is not conn:
            return len(data)  # a superseded connection: gmqtt would drop it all too
        simple = self._handler._connection_state.protocol_version >= 5
        token_of = conn
        items: list[Inbound] = []
        add = items.append
        lane: list[Inbound] | None = [] if self._ack_lane is not None else None
        pos, n = 0, len(data)
        acked = 0
        urgent = False
        while pos + 2 <= n:
            cmd = data[pos]
            i, length, mult = pos + 1, 0, 1
            while True:
                if i >= n:
                    self._take(items, acked, urgent, lane)
                    return pos
                byte = data[i]
                i += 1
                length += (byte & 0x7F) * mult
                if not byte & 0x80:
                    break
                mult *= 128
                if mult > 2097152:
                    self._take(items, acked, urgent, lane)
                    return -1
            end = i + length
            if end > n:
                break
            kind = cmd & 0xF6  # PUBLISH with its QoS, whatever DUP and RETAIN say
            tlen = (data[i] << 8) | data[i + 1] if length >= 2 else 0
            p = i + 2 + tlen + (2 if kind == 0x32 else 0)
            if simple and tlen and (kind == 0x32 or kind == 0x30) and p <= end:
                p = i + 2 + tlen
                try:
                    topic = data[i + 2 : p].decode("utf-8")
                except UnicodeDecodeError:
                    conn.put_package(Package(cmd, data[i:end]))
                    pos = end
                    continue
                token = None
                if kind == 0x32:
                    token = (token_of, (data[p] << 8) | data[p + 1])
                    p += 2
                    acked += 1
                plen, mult = 0, 1
                while p < end:
                    byte = data[p]
                    p += 1
                    plen += (byte & 0x7F) * mult
                    mult *= 128
                    if not byte & 0x80:
                        break
                if topic.endswith(_ACKS_SUFFIX):
                    if lane is not None:
                        lane.append(Inbound(topic, data[p + plen : end], _UNSTAMPED, token))
                        pos = end
                        continue
                    urgent = True
                add(Inbound(topic, data[p + plen : end], _UNSTAMPED, token))
            else:
                conn.put_package(Package(cmd, data[i:end]))
            pos = end
        conn._last_data_in = time.monotonic()
        self._take(items, acked, urgent, lane)
        return pos

    def _take(
        self, items: list[Inbound], acked: int, urgent: bool, lane: list[Inbound] | None
    ) -> None:
        self._unacked += acked
        if lane:
            # An ack may have an API request waiting for it: its own writer, at once.
            self._to_ack_lane(lane)
        if items:
            # Without an ack lane, acks are urgent: no batching delay.
            self._batcher.extend(items, urgent=urgent)

    def _on_packet(self, cmd: int, packet: bytes) -> None:
        """gmqtt's packet dispatch, with a lean path for QoS 0/1 PUBLISH.

        We never allow topic aliases (no Topic Alias Maximum in CONNECT), need no
        PUBLISH property, and take the retain flag from nowhere: so the topic, the
        packet id and the payload are all there is to read. Anything unusual (QoS 2,
        an empty topic, MQTT 3.1.1 after a downgrade) goes to gmqtt.
        """
        if cmd & 0xF0 != 0x30 or cmd & 0x06 == 0x06:
            self._gmqtt_packet(cmd, packet)
            return
        try:
            tlen = (packet[0] << 8) | packet[1]
            pos = 2 + tlen
            if tlen == 0 or self._handler._connection_state.protocol_version < 5:
                raise ValueError("not the simple case")
            topic = packet[2:pos].decode("utf-8")
            mid = None
            if cmd & 0x06:
                mid = (packet[pos] << 8) | packet[pos + 1]
                pos += 2
            # Property Length (variable byte integer), then the properties: skipped.
            plen, mult = 0, 1
            while True:
                byte = packet[pos]
                pos += 1
                plen += (byte & 0x7F) * mult
                mult *= 128
                if not byte & 0x80:
                    break
            payload = packet[pos + plen :]
        except (IndexError, ValueError):
            self._gmqtt_packet(cmd, packet)
            return
        if mid is None:
            self._batcher.add(Inbound(topic, payload, _UNSTAMPED))
        else:
            self._on_qos1(mid, payload, topic, None)

    def _on_qos1(self, mid: int, payload: bytes, topic: str, properties: Any) -> None:
        self._unacked += 1
        item = Inbound(topic, payload, _UNSTAMPED, (self._handler.current_connection, mid))
        ack = topic.endswith(_ACKS_SUFFIX)
        if ack and self._ack_lane is not None:
            self._to_ack_lane([item])
            return
        # An ack may have an API request waiting for it: no batching delay.
        self._batcher.add(item, urgent=ack)

    # -- batches -------------------------------------------------------------------

    def _to_ack_lane(self, acks: list[Inbound]) -> None:
        assert self._ack_lane is not None
        now = datetime.now(UTC)
        for item in acks:
            item.received_at = now
        self.metrics.messages.inc(len(acks))
        self._ack_lane.submit(acks)

    def _flush(self, batch: list[Inbound]) -> None:
        # received_at is the batch's: within batch_delay of each message, for far less.
        now = datetime.now(UTC)
        for item in batch:
            item.received_at = now
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
        self._batcher.writer_idle()

    # -- downlink -----------------------------------------------------------------------

    def _connection_up(self) -> bool:
        conn = self._handler.current_connection if self._client is not None else None
        return conn is not None and not conn.is_closing() and self.connected.is_set()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Queue a publish on the loop thread (use :class:`GmqttPublisher` from others).

        The broker's Receive Maximum (Mosquitto: 20) bounds our unacknowledged QoS 1
        publishes and gmqtt raises beyond it, so publishes wait in an outbox.
        """
        if len(self._outbox) >= OUTBOX_LIMIT:
            dropped = self._outbox.popleft()
            logger.warning("outbox full while disconnected: %s not published", dropped[0])
        self._outbox.append((topic, payload, qos, retain))
        self._pump()  # now if connected, else after the reconnect (receipt loop)

    def _capacity(self) -> int:
        return free_ids(self._handler.id_generator)

    def _pump(self) -> None:
        if self._client is None or not self._connection_up():
            return
        outbox = self._outbox
        room = self._capacity()
        while outbox and room > 0:
            topic, payload, qos, retain = outbox.popleft()
            self._client.publish(topic, payload, qos=qos, retain=retain)
            if qos:
                room -= 1

    async def _receipt_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.settings.receipt_interval)
            self._send_receipts()
            self._pump()  # in case no PUBACK is on its way (after a reconnect)
            while self._pending_receipts and self._connection_up() and not stop.is_set():
                await asyncio.sleep(0.002)  # the broker's Receive Maximum was reached
                self._send_receipts()

    def _send_receipts(self) -> None:
        """Publish the pending receipts (QoS 1), as many as the broker lets us now.

        Receipts are most of what ingest publishes, so they skip pydantic and gmqtt's
        packet builder: the payload comes from a template (checked against the
        protocol model in the tests), the packet is built here, stored in gmqtt's
        QoS 1 store (replayed on session resume, dropped on PUBACK) and written in one go.
        """
        if not self._pending_receipts or not self._connection_up():
            return
        conn = self._handler.current_connection
        store = self._client._persistent_storage if self._client is not None else None
        room = self._capacity() - len(self._outbox)
        if conn is None or store is None or room <= 0:
            return
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        ids = self._handler.id_generator
        out = []
        sent = 0
        for cabinet in list(self._pending_receipts)[:room]:
            upto = self._pending_receipts.pop(cabinet)
            self._receipt_counter += 1
            payload = receipt_payload(
                f"{self._receipt_prefix}{self._receipt_counter:x}", ts, cabinet, upto
            )
            topic = f"{self.settings.prefix}/{cabinet}/receipts".encode()
            mid = ids.next_id()
            body = b"".join(
                (len(topic).to_bytes(2, "big"), topic, mid.to_bytes(2, "big"), b"\x00", payload)
            )
            packet = b"\x32" + _varint(len(body)) + body
            store.push_message(mid, packet)
            out.append(packet)
            sent += 1
        conn.send_package(b"".join(out))
        self.metrics.receipts.inc(sent)
