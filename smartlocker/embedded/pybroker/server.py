"""The asyncio side: one :class:`Connection` (an ``asyncio.Protocol``) per client.

Bytes in go through the codec's :class:`Framer` and :func:`decode`; each packet is
handled synchronously against :class:`BrokerState` (one thread, no locks). A
protocol violation or malformed packet ends that one connection with a reason
code and a log line; nothing a client sends can stop the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
import uuid
from dataclasses import dataclass, replace

from .auth import Acl, PasswordFile
from .codec import (
    Framer,
    UnsupportedVersion,
    decode,
    encode,
)
from .errors import ProtocolViolation
from .packets import (
    MQTT_5,
    MQTT_311,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Prop,
    Puback,
    Publish,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
)
from .state import BrokerState, Message, Session
from .topics import split_shared, validate_topic

__all__ = ["Connection", "MqttServer", "ServerSettings"]

logger = logging.getLogger(__name__)

#: PUBACK / CONNACK / DISCONNECT reason codes used here.
SUCCESS = 0x00
NO_MATCHING_SUBSCRIBERS = 0x10
NO_SUBSCRIPTION_EXISTED = 0x11
NOT_AUTHORIZED = 0x87
SERVER_SHUTTING_DOWN = 0x8B
BAD_AUTH_METHOD = 0x8C
KEEP_ALIVE_TIMEOUT = 0x8D
SESSION_TAKEN_OVER = 0x8E
TOPIC_ALIAS_INVALID = 0x94
QOS_NOT_SUPPORTED = 0x9B
CLIENT_ID_NOT_VALID = 0x85
DISCONNECT_WITH_WILL = 0x04


@dataclass
class ServerSettings:
    """What the server enforces; None for ``passwords``/``acl`` means anyone may do anything."""

    max_packet_size: int = 4 * 1024 * 1024
    connect_timeout_s: float = 10.0
    passwords: PasswordFile | None = None
    acl: Acl | None = None
    #: A client that reads nothing while this much waits for it is disconnected.
    max_write_buffer: int = 64 * 1024 * 1024


class MqttServer:
    """The broker's listeners, connections and the shared :class:`BrokerState`."""

    def __init__(self, settings: ServerSettings, state: BrokerState | None = None) -> None:
        self.settings = settings
        acl = settings.acl
        self.state = state or BrokerState(acl.can_read if acl is not None else None)
        self.connections: dict[str, Connection] = {}
        self._servers: list[asyncio.Server] = []
        self._pending_wills: dict[str, asyncio.TimerHandle] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.stopping = False

    async def listen(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Connection(self), host, port, ssl=tls, reuse_address=True
        )
        self._servers.append(server)
        if self._sweeper is None:
            self._sweep()
        logger.info("listening on %s:%d%s", host, port, " (TLS)" if tls else "")

    async def close(self, *, abort: bool = False) -> None:
        """Stop listening and drop every client (``abort``: no goodbye, like a crash)."""
        self.stopping = True
        for server in self._servers:
            server.close()
        for connection in list(self.connections.values()):
            connection.shut(SERVER_SHUTTING_DOWN, abort=abort)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for handle in self._pending_wills.values():
            handle.cancel()
        self._pending_wills.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(5.0, self._sweep)  # first: a failure must not end it
        gone = self.state.expire(time.monotonic())
        if gone:
            logger.info("sessions expired: %s", ", ".join(gone[:20]))

    # -- wills ---------------------------------------------------------------------------

    def send_will(self, client_id: str, username: str | None, will: Will, delay: float) -> None:
        if delay > 0:
            loop = asyncio.get_running_loop()
            self._pending_wills[client_id] = loop.call_later(
                delay, self._publish_will, client_id, username, will
            )
        else:
            self._publish_will(client_id, username, will)

    def cancel_will(self, client_id: str) -> None:
        handle = self._pending_wills.pop(client_id, None)
        if handle is not None:
            handle.cancel()

    def _publish_will(self, client_id: str, username: str | None, will: Will) -> None:
        self._pending_wills.pop(client_id, None)
        acl = self.settings.acl
        if acl is not None and not acl.can_write(username, client_id, will.topic):
            logger.warning("will of %s on %s denied by the ACL: dropped", client_id, will.topic)
            return
        props = {k: v for k, v in will.properties.items() if k != Prop.WILL_DELAY_INTERVAL}
        message = Message(will.topic, will.payload, will.qos, will.retain, props, client_id)
        count = self.state.publish(message)
        logger.info("will of %s published on %s (%d receivers)", client_id, will.topic, count)


class Connection(asyncio.Protocol):
    """One client connection, from CONNECT to close."""

    def __init__(self, server: MqttServer) -> None:
        self.server = server
        self.framer = Framer(server.settings.max_packet_size)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.version = MQTT_5
        self.client_id = ""
        self.username: str | None = None
        self.session: Session | None = None
        self.will: Will | None = None
        self.keepalive = 0
        self.last_heard = time.monotonic()
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None
        #: Packets written during one loop iteration leave in one send() (a syscall per
        #: packet cost more than everything else the broker does with a message).
        self._out: list[bytes] = []
        self._flush_scheduled = False

    # -- asyncio callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.server.settings.connect_timeout_s, self._no_connect)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_heard = time.monotonic()
        try:
            for first, body in self.framer.feed(data):
                if self.closed:
                    return
                self._handle(decode(first, body, self.version))
        except ProtocolViolation as exc:
            logger.warning(
                "client %s (%s): %s; disconnecting (reason %#04x)",
                self.client_id or "-",
                self.peer,
                exc,
                exc.reason_code,
            )
            self._refuse(exc)
        except Exception:
            logger.exception(
                "client %s (%s): internal error; disconnecting", self.client_id, self.peer
            )
            self.shut(0x80)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            logger.info("client %s (%s) connection lost: %s", self.client_id or "-", self.peer, exc)
        self._finish(abnormal=True)

    # -- packets ---------------------------------------------------------------------------

    def _handle(self, packet: Packet) -> None:
        if self.session is None:
            if not isinstance(packet, Connect):
                raise ProtocolViolation(f"{type(packet).__name__} before CONNECT")
            self._connect(packet)
            return
        match packet:
            case Publish():
                self._publish(packet)
            case Puback(kind=PacketType.PUBACK):
                self.session.acknowledge(packet.packet_id)
            case Subscribe():
                self._subscribe(packet)
            case Unsubscribe():
                codes = tuple(
                    SUCCESS
                    if self.server.state.unsubscribe(self.session, f)
                    else NO_SUBSCRIPTION_EXISTED
                    for f in packet.topic_filters
                )
                self._send(Unsuback(packet.packet_id, codes))
            case Pingreq():
                self._send(Pingresp())
            case Disconnect():
                self._disconnect(packet)
            case Auth():
                raise ProtocolViolation("AUTH without an authentication method")
            case _:
                raise ProtocolViolation(f"unexpected {type(packet).__name__} from a client")

    def _connect(self, c: Connect) -> None:
        server, settings = self.server, self.server.settings
        self.version = c.protocol_version
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        props: dict[int, object] = {}
        client_id = c.client_id
        if not client_id:
            if self.version == MQTT_311 and not c.clean_start:
                return self._refuse_connect(CLIENT_ID_NOT_VALID, "empty client id, clean_session 0")
            client_id = f"auto-{uuid.uuid4()}"
            props[Prop.ASSIGNED_CLIENT_IDENTIFIER] = client_id
        self.client_id, self.username = client_id, c.username
        if Prop.AUTHENTICATION_METHOD in c.properties:
            return self._refuse_connect(BAD_AUTH_METHOD, "extended authentication")
        if settings.passwords is not None and not settings.passwords.verify(c.username, c.password):
            return self._refuse_connect(NOT_AUTHORIZED, f"bad credentials for user {c.username!r}")
        if c.will is not None:
            validate_topic(c.will.topic)
            if c.will.qos > 1:
                return self._refuse_connect(QOS_NOT_SUPPORTED, "will with QoS 2")
        old = server.connections.get(client_id)
        if old is not None:
            logger.info("client %s taken over from %s by %s", client_id, old.peer, self.peer)
            old.shut(SESSION_TAKEN_OVER)
        server.cancel_will(client_id)
        now = time.monotonic()
        session, present = server.state.open_session(
            client_id, clean_start=c.clean_start, now=now, username=c.username
        )
        if self.version == MQTT_5:
            session.expiry_interval = int(c.properties.get(Prop.SESSION_EXPIRY_INTERVAL, 0))
        else:
            session.expiry_interval = 0 if c.clean_start else 0xFFFFFFFF
        self.session, self.will, self.keepalive = session, c.will, c.keepalive
        server.connections[client_id] = self
        props[Prop.MAXIMUM_QOS] = 1
        props[Prop.MAXIMUM_PACKET_SIZE] = settings.max_packet_size
        self._send(Connack(SUCCESS, present, props))
        logger.info(
            "client %s connected from %s as %s (MQTT %s, session present %s)",
            client_id,
            self.peer,
            c.username,
            "5" if self.version == MQTT_5 else "3.1.1",
            present,
        )
        session.attach(
            self._send_publish,
            int(c.properties.get(Prop.RECEIVE_MAXIMUM, 65535)),
            c.properties.get(Prop.MAXIMUM_PACKET_SIZE),
        )
        if self.keepalive:
            self._arm_keepalive()

    def _publish(self, p: Publish) -> None:
        assert self.session is not None
        if p.qos > 1:
            raise ProtocolViolation("QoS 2 is not supported (Maximum QoS is 1)", QOS_NOT_SUPPORTED)
        if Prop.TOPIC_ALIAS in p.properties:
            raise ProtocolViolation("topic alias (Topic Alias Maximum is 0)", TOPIC_ALIAS_INVALID)
        if Prop.SUBSCRIPTION_IDENTIFIER in p.properties:
            raise ProtocolViolation("subscription identifier in a client's PUBLISH")
        validate_topic(p.topic)
        acl = self.server.settings.acl
        if acl is not None and not acl.can_write(self.username, self.client_id, p.topic):
            logger.info("client %s: publish to %s denied by the ACL", self.client_id, p.topic)
            if p.qos == 1 and p.packet_id is not None:
                code = NOT_AUTHORIZED if self.version == MQTT_5 else SUCCESS
                self._send(Puback(p.packet_id, code))
            return
        message = Message(p.topic, p.payload, p.qos, p.retain, p.properties, self.client_id)
        receivers = self.server.state.publish(message)
        if p.qos == 1 and p.packet_id is not None:
            self._send(Puback(p.packet_id, SUCCESS if receivers else NO_MATCHING_SUBSCRIBERS))

    def _subscribe(self, s: Subscribe) -> None:
        assert self.session is not None
        identifiers = s.properties.get(Prop.SUBSCRIPTION_IDENTIFIER, ())
        if len(identifiers) > 1 or 0 in identifiers:
            raise ProtocolViolation("bad subscription identifier")
        identifier = identifiers[0] if identifiers else None
        codes: list[int] = []
        retained: list[Publish] = []
        for sub in s.subscriptions:
            try:
                group, _ = split_shared(sub.topic_filter)
            except ProtocolViolation as exc:
                logger.info("client %s: %s", self.client_id, exc)
                codes.append(exc.reason_code)
                continue
            if group is not None and sub.no_local:
                raise ProtocolViolation("No Local on a shared subscription")
            granted = min(sub.qos, 1)  # Maximum QoS 1: a QoS 2 request is granted 1
            retained += self.server.state.subscribe(
                self.session, replace(sub, qos=granted), identifier
            )
            codes.append(granted)
        self._send(Suback(s.packet_id, tuple(codes)))
        for publish in retained:
            self.session.enqueue(publish)

    def _disconnect(self, d: Disconnect) -> None:
        expiry = d.properties.get(Prop.SESSION_EXPIRY_INTERVAL)
        if expiry is not None and self.session is not None:
            self.session.expiry_interval = int(expiry)
        if d.reason_code != DISCONNECT_WITH_WILL:
            self.will = None
        logger.info("client %s disconnected (reason %#04x)", self.client_id, d.reason_code)
        self._finish(abnormal=d.reason_code == DISCONNECT_WITH_WILL)
        if self.transport is not None:
            self._flush()
            self.transport.close()

    # -- sending and closing ------------------------------------------------------------

    def _send(self, packet: Packet) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._write(encode(packet, self.version))

    def _send_publish(self, publish: Publish) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > self.server.settings.max_write_buffer:
            logger.warning("client %s reads too slowly; disconnecting", self.client_id)
            self.shut(0x97)  # quota exceeded
            return
        self._write(encode(publish, self.version))

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def _arm_keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.keepalive * 1.5, self._check_keepalive)

    def _check_keepalive(self) -> None:
        if self.closed:
            return
        silent = time.monotonic() - self.last_heard
        if silent >= self.keepalive * 1.5:
            logger.info("client %s silent for %.0fs: keepalive timeout", self.client_id, silent)
            self.shut(KEEP_ALIVE_TIMEOUT)
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.keepalive * 1.5 - silent, self._check_keepalive)

    def _no_connect(self) -> None:
        logger.info("%s sent no CONNECT in time; closing", self.peer)
        self.shut(0x87, abort=True)

    def _refuse_connect(self, code: int, why: str) -> None:
        logger.warning("client %s (%s) refused: %s", self.client_id or "-", self.peer, why)
        self._send(Connack(code))
        self.closed = True
        if self.transport is not None:
            self._flush()
            self.transport.close()

    def _refuse(self, exc: ProtocolViolation) -> None:
        if self.session is None:
            if isinstance(exc, UnsupportedVersion):
                self.version = MQTT_311  # the one CONNACK every client can read
            self._send(Connack(exc.reason_code))
            self.closed = True
            if self.transport is not None:
                self._flush()
                self.transport.close()
            return
        self.shut(exc.reason_code)

    def shut(self, reason: int, *, abort: bool = False) -> None:
        """Close from the broker's side; the will goes out unless the broker stops."""
        if self.closed:
            return
        if self.session is not None and self.version == MQTT_5 and not abort:
            self._send(Disconnect(reason))
        self._finish(abnormal=True)
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self._flush()
                self.transport.close()

    def _finish(self, *, abnormal: bool) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        session, server = self.session, self.server
        if session is None:
            return
        if server.connections.get(self.client_id) is self:
            del server.connections[self.client_id]
        now = time.monotonic()
        session.detach(now)
        if session.expiry_interval == 0:
            server.state.discard(session)
        will, self.will = self.will, None
        if abnormal and will is not None and not server.stopping:
            delay = float(will.properties.get(Prop.WILL_DELAY_INTERVAL, 0))
            if session.expiry_interval == 0:
                delay = 0.0
            server.send_will(
                self.client_id, self.username, will, min(delay, session.expiry_interval)
            )
