"""MQTT 5.0 and 3.1.1 packets ↔ bytes (sans-I/O, pure).

:class:`Framer` cuts a byte stream into packets (enforcing a maximum size);
:func:`decode` turns one packet's bytes into a value of :mod:`.packets` and
:func:`encode` back. Bad bytes raise :class:`MalformedPacket` (or another
:class:`ProtocolViolation`) carrying the reason code the broker answers with;
nothing here touches a socket, so every malformed input can be property-tested.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from .errors import MalformedPacket, PacketTooLarge, ProtocolViolation
from .packets import (
    MAX_VARINT,
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
    Properties,
    Puback,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)

__all__ = ["Framer", "UnsupportedVersion", "decode", "encode"]


class UnsupportedVersion(ProtocolViolation):
    """CONNECT with a protocol other than MQTT 3.1.1 or 5.0 (reason 0x84)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 0x84)


_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
_PROP_KIND = {
    Prop.PAYLOAD_FORMAT_INDICATOR: _BYTE,
    Prop.MESSAGE_EXPIRY_INTERVAL: _U32,
    Prop.CONTENT_TYPE: _STR,
    Prop.RESPONSE_TOPIC: _STR,
    Prop.CORRELATION_DATA: _BIN,
    Prop.SUBSCRIPTION_IDENTIFIER: _VARINT,
    Prop.SESSION_EXPIRY_INTERVAL: _U32,
    Prop.ASSIGNED_CLIENT_IDENTIFIER: _STR,
    Prop.SERVER_KEEP_ALIVE: _U16,
    Prop.AUTHENTICATION_METHOD: _STR,
    Prop.AUTHENTICATION_DATA: _BIN,
    Prop.REQUEST_PROBLEM_INFORMATION: _BYTE,
    Prop.WILL_DELAY_INTERVAL: _U32,
    Prop.REQUEST_RESPONSE_INFORMATION: _BYTE,
    Prop.RESPONSE_INFORMATION: _STR,
    Prop.SERVER_REFERENCE: _STR,
    Prop.REASON_STRING: _STR,
    Prop.RECEIVE_MAXIMUM: _U16,
    Prop.TOPIC_ALIAS_MAXIMUM: _U16,
    Prop.TOPIC_ALIAS: _U16,
    Prop.MAXIMUM_QOS: _BYTE,
    Prop.RETAIN_AVAILABLE: _BYTE,
    Prop.USER_PROPERTY: _PAIR,
    Prop.MAXIMUM_PACKET_SIZE: _U32,
    Prop.WILDCARD_SUBSCRIPTION_AVAILABLE: _BYTE,
    Prop.SUBSCRIPTION_IDENTIFIER_AVAILABLE: _BYTE,
    Prop.SHARED_SUBSCRIPTION_AVAILABLE: _BYTE,
}
#: Properties that may appear more than once; their value is always a tuple.
_REPEATABLE = frozenset({Prop.USER_PROPERTY, Prop.SUBSCRIPTION_IDENTIFIER})


# -- framing --------------------------------------------------------------------


class Framer:
    """Cuts a byte stream into ``(first byte, body)`` packets; rejects oversize ones."""

    def __init__(self, max_packet_size: int = MAX_VARINT + 5) -> None:
        self.max_packet_size = max_packet_size
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        """Add received bytes and yield every packet now complete."""
        self._buffer += data
        while True:
            frame = self._next()
            if frame is None:
                return
            yield frame

    def _next(self) -> tuple[int, bytes] | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        length, multiplier, pos = 0, 1, 1
        while True:
            if pos >= len(buf):
                return None
            byte = buf[pos]
            length += (byte & 0x7F) * multiplier
            pos += 1
            if not byte & 0x80:
                break
            multiplier *= 128
            if pos > 4:
                raise MalformedPacket("remaining length longer than four bytes")
        if pos + length > self.max_packet_size:
            raise PacketTooLarge(
                f"packet of {pos + length} bytes exceeds the maximum of {self.max_packet_size}"
            )
        if len(buf) < pos + length:
            return None
        first, body = buf[0], bytes(buf[pos : pos + length])
        del buf[: pos + length]
        return first, body


# -- primitives -----------------------------------------------------------------


def _varint(value: int) -> bytes:
    if not 0 <= value <= MAX_VARINT:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _str(value: str) -> bytes:
    data = value.encode()
    if len(data) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return struct.pack("!H", len(data)) + data


def _bin(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError("binary data longer than 65535 bytes")
    return struct.pack("!H", len(value)) + value


class _Reader:
    """A cursor over one packet's body; running past the end is a malformed packet."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MalformedPacket("packet shorter than its fields")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack("!H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack("!I", self.take(4))[0]
        return value

    def varint(self) -> int:
        value, multiplier = 0, 1
        for _ in range(4):
            byte = self.byte()
            value += (byte & 0x7F) * multiplier
            if not byte & 0x80:
                return value
            multiplier *= 128
        raise MalformedPacket("variable byte integer longer than four bytes")

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        raw = self.binary()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPacket("string is not valid UTF-8") from None
        if "\x00" in text:
            raise MalformedPacket("string contains U+0000")
        return text

    def rest(self) -> bytes:
        return self.take(self.left)


# -- properties -----------------------------------------------------------------


def _encode_properties(props: Properties) -> bytes:
    out = bytearray()
    for ident, value in props.items():
        kind = _PROP_KIND[Prop(ident)]
        for item in value if ident in _REPEATABLE else (value,):
            out += _varint(ident)
            if kind == _BYTE:
                out.append(item)
            elif kind == _U16:
                out += struct.pack("!H", item)
            elif kind == _U32:
                out += struct.pack("!I", item)
            elif kind == _VARINT:
                out += _varint(item)
            elif kind == _STR:
                out += _str(item)
            elif kind == _BIN:
                out += _bin(item)
            else:
                out += _str(item[0]) + _str(item[1])
    return _varint(len(out)) + bytes(out)


def _decode_properties(reader: _Reader) -> Properties:
    length = reader.varint()
    sub = _Reader(reader.take(length))
    props: Properties = {}
    while sub.left:
        ident = sub.varint()
        try:
            prop = Prop(ident)
        except ValueError:
            raise MalformedPacket(f"unknown property id {ident:#x}") from None
        kind = _PROP_KIND[prop]
        value: Any
        if kind == _BYTE:
            value = sub.byte()
        elif kind == _U16:
            value = sub.u16()
        elif kind == _U32:
            value = sub.u32()
        elif kind == _VARINT:
            value = sub.varint()
        elif kind == _STR:
            value = sub.string()
        elif kind == _BIN:
            value = sub.binary()
        else:
            value = (sub.string(), sub.string())
        if prop in _REPEATABLE:
            props[prop] = (*props.get(prop, ()), value)
        elif prop in props:
            raise ProtocolViolation(f"property {prop.name} given twice")
        else:
            props[prop] = value
    return props


# -- decoding -------------------------------------------------------------------


def decode(first: int, body: bytes, version: int = MQTT_5) -> Packet:
    """One packet from its first byte and body (as :class:`Framer` yields them)."""
    try:
        kind = PacketType(first >> 4)
    except ValueError:
        raise MalformedPacket("packet type 0 is reserved") from None
    flags = first & 0x0F
    expected = 0b0010 if kind in (PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE) else 0
    if kind == PacketType.PUBREL:
        expected = 0b0010
    if kind != PacketType.PUBLISH and flags != expected:
        raise MalformedPacket(f"{kind.name} with reserved flags {flags:#06b}")
    if kind == PacketType.AUTH and version < MQTT_5:
        raise MalformedPacket("AUTH exists only in MQTT 5")
    reader = _Reader(body)
    packet: Packet = _DECODERS[kind](reader, flags, version)
    if reader.left:
        raise MalformedPacket(f"{kind.name} has {reader.left} bytes after its fields")
    return packet


def _decode_connect(r: _Reader, _flags: int, _version: int) -> Connect:
    name = r.string()
    version = r.byte()
    if (name, version) not in (("MQTT", MQTT_311), ("MQTT", MQTT_5)):
        raise UnsupportedVersion(f"protocol {name!r} level {version} is not supported")
    cflags = r.byte()
    if cflags & 0x01:
        raise MalformedPacket("CONNECT reserved flag set")
    will_flag, will_qos, will_retain = bool(cflags & 0x04), (cflags >> 3) & 0x03, cflags & 0x20
    if will_qos == 3:
        raise MalformedPacket("will QoS 3")
    if not will_flag and (will_qos or will_retain):
        raise MalformedPacket("will QoS or retain without a will")
    has_user, has_password = bool(cflags & 0x80), bool(cflags & 0x40)
    if version == MQTT_311 and has_password and not has_user:
        raise MalformedPacket("password without user name")
    keepalive = r.u16()
    props = _decode_properties(r) if version == MQTT_5 else {}
    client_id = r.string()
    will = None
    if will_flag:
        will_props = _decode_properties(r) if version == MQTT_5 else {}
        topic = r.string()
        will = Will(topic, r.binary(), will_qos, bool(will_retain), will_props)
    username = r.string() if has_user else None
    password = r.binary() if has_password else None
    return Connect(
        client_id=client_id,
        protocol_version=version,
        clean_start=bool(cflags & 0x02),
        keepalive=keepalive,
        username=username,
        password=password,
        will=will,
        properties=props,
    )


def _decode_connack(r: _Reader, _flags: int, version: int) -> Connack:
    ack_flags = r.byte()
    if ack_flags & 0xFE:
        raise MalformedPacket("CONNACK reserved flags set")
    code = r.byte()
    props = _decode_properties(r) if version == MQTT_5 else {}
    return Connack(code, bool(ack_flags & 1), props)


def _decode_publish(r: _Reader, flags: int, version: int) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    dup = bool(flags & 0x08)
    if dup and qos == 0:
        raise MalformedPacket("PUBLISH QoS 0 with DUP")
    topic = r.string()
    packet_id = None
    if qos:
        packet_id = r.u16()
        if packet_id == 0:
            raise MalformedPacket("packet identifier 0")
    props = _decode_properties(r) if version == MQTT_5 else {}
    return Publish(topic, r.rest(), qos, bool(flags & 1), dup, packet_id, props)


def _decoder_puback(kind: PacketType) -> Any:
    def decode_ack(r: _Reader, _flags: int, version: int) -> Puback:
        packet_id = r.u16()
        code, props = 0, {}
        if version == MQTT_5 and r.left:
            code = r.byte()
            if r.left:
                props = _decode_properties(r)
        return Puback(packet_id, code, props, kind)

    return decode_ack


def _decode_subscribe(r: _Reader, _flags: int, version: int) -> Subscribe:
    packet_id = r.u16()
    props = _decode_properties(r) if version == MQTT_5 else {}
    subs = []
    while r.left:
        topic_filter = r.string()
        options = r.byte()
        reserved = 0xC0 if version == MQTT_5 else 0xFC
        if options & reserved:
            raise MalformedPacket("subscription options reserved bits set")
        qos, handling = options & 0x03, (options >> 4) & 0x03
        if qos == 3 or handling == 3:
            raise MalformedPacket("subscription QoS 3 or retain handling 3")
        subs.append(
            Subscription(topic_filter, qos, bool(options & 0x04), bool(options & 0x08), handling)
        )
    if not subs:
        raise ProtocolViolation("SUBSCRIBE without a topic filter")
    return Subscribe(packet_id, tuple(subs), props)


def _decode_suback(r: _Reader, _flags: int, version: int) -> Suback:
    packet_id = r.u16()
    props = _decode_properties(r) if version == MQTT_5 else {}
    return Suback(packet_id, tuple(r.rest()), props)


def _decode_unsubscribe(r: _Reader, _flags: int, version: int) -> Unsubscribe:
    packet_id = r.u16()
    props = _decode_properties(r) if version == MQTT_5 else {}
    filters = []
    while r.left:
        filters.append(r.string())
    if not filters:
        raise ProtocolViolation("UNSUBSCRIBE without a topic filter")
    return Unsubscribe(packet_id, tuple(filters), props)


def _decode_unsuback(r: _Reader, _flags: int, version: int) -> Unsuback:
    packet_id = r.u16()
    if version < MQTT_5:
        return Unsuback(packet_id)
    props = _decode_properties(r)
    return Unsuback(packet_id, tuple(r.rest()), props)


def _decode_empty(packet: Pingreq | Pingresp) -> Any:
    def decode_empty(_r: _Reader, _flags: int, _version: int) -> Pingreq | Pingresp:
        return packet

    return decode_empty


def _decode_reason_and_properties(cls: type[Disconnect] | type[Auth]) -> Any:
    def decode_it(r: _Reader, _flags: int, version: int) -> Disconnect | Auth:
        if version < MQTT_5 or not r.left:
            return cls()
        code = r.byte()
        return cls(code, _decode_properties(r) if r.left else {})

    return decode_it


_DECODERS: dict[PacketType, Any] = {
    PacketType.CONNECT: _decode_connect,
    PacketType.CONNACK: _decode_connack,
    PacketType.PUBLISH: _decode_publish,
    PacketType.PUBACK: _decoder_puback(PacketType.PUBACK),
    PacketType.PUBREC: _decoder_puback(PacketType.PUBREC),
    PacketType.PUBREL: _decoder_puback(PacketType.PUBREL),
    PacketType.PUBCOMP: _decoder_puback(PacketType.PUBCOMP),
    PacketType.SUBSCRIBE: _decode_subscribe,
    PacketType.SUBACK: _decode_suback,
    PacketType.UNSUBSCRIBE: _decode_unsubscribe,
    PacketType.UNSUBACK: _decode_unsuback,
    PacketType.PINGREQ: _decode_empty(Pingreq()),
    PacketType.PINGRESP: _decode_empty(Pingresp()),
    PacketType.DISCONNECT: _decode_reason_and_properties(Disconnect),
    PacketType.AUTH: _decode_reason_and_properties(Auth),
}


# -- encoding -------------------------------------------------------------------

#: MQTT 5 CONNACK reason → MQTT 3.1.1 return code.
_CONNACK_311 = {0x00: 0, 0x84: 1, 0x85: 2, 0x86: 4, 0x87: 5, 0x8C: 5}


def encode(packet: Packet, version: int = MQTT_5) -> bytes:
    """The bytes of ``packet`` in protocol ``version`` (properties dropped for 3.1.1)."""
    v5 = version == MQTT_5

    def props(p: Properties) -> bytes:
        return _encode_properties(p) if v5 else b""

    first: int
    body: bytes
    match packet:
        case Connect():
            return _encode_connect(packet)
        case Connack(reason_code=code, session_present=present, properties=p):
            first = PacketType.CONNACK << 4
            code = code if v5 else _CONNACK_311.get(code, 3)
            body = bytes((int(present), code)) + props(p)
        case Publish(topic=topic, qos=qos, packet_id=packet_id, properties=p):
            first = (PacketType.PUBLISH << 4) | (packet.dup << 3) | (qos << 1) | packet.retain
            body = _str(topic)
            if qos:
                if not packet_id:
                    raise ValueError("QoS > 0 PUBLISH needs a packet identifier")
                body += struct.pack("!H", packet_id)
            body += props(p) + packet.payload
        case Puback(packet_id=packet_id, reason_code=code, properties=p, kind=kind):
            first = (kind << 4) | (0b0010 if kind == PacketType.PUBREL else 0)
            body = struct.pack("!H", packet_id)
            if v5 and (code or p):
                body += bytes((code,)) + (props(p) if p else b"")
        case Subscribe(packet_id=packet_id, subscriptions=subs, properties=p):
            first = (PacketType.SUBSCRIBE << 4) | 0b0010
            body = struct.pack("!H", packet_id) + props(p)
            for s in subs:
                options = s.qos
                if v5:
                    options |= (
                        (s.no_local << 2) | (s.retain_as_published << 3) | (s.retain_handling << 4)
                    )
                body += _str(s.topic_filter) + bytes((options,))
        case Suback(packet_id=packet_id, reason_codes=codes, properties=p):
            first = PacketType.SUBACK << 4
            if not v5:
                codes = tuple(c if c < 0x80 else 0x80 for c in codes)
            body = struct.pack("!H", packet_id) + props(p) + bytes(codes)
        case Unsubscribe(packet_id=packet_id, topic_filters=filters, properties=p):
            first = (PacketType.UNSUBSCRIBE << 4) | 0b0010
            body = struct.pack("!H", packet_id) + props(p) + b"".join(map(_str, filters))
        case Unsuback(packet_id=packet_id, reason_codes=codes, properties=p):
            first = PacketType.UNSUBACK << 4
            body = struct.pack("!H", packet_id) + (props(p) + bytes(codes) if v5 else b"")
        case Pingreq():
            first, body = PacketType.PINGREQ << 4, b""
        case Pingresp():
            first, body = PacketType.PINGRESP << 4, b""
        case Disconnect(reason_code=code, properties=p) | Auth(reason_code=code, properties=p):
            kind = PacketType.DISCONNECT if isinstance(packet, Disconnect) else PacketType.AUTH
            first = kind << 4
            body = b""
            if v5 and (code or p):
                body = bytes((code,)) + (props(p) if p else b"")
        case _:  # pragma: no cover - the union is exhausted above
            raise TypeError(f"not a packet: {packet!r}")
    return bytes((first,)) + _varint(len(body)) + body


def _encode_connect(c: Connect) -> bytes:
    v5 = c.protocol_version == MQTT_5
    flags = (c.clean_start << 1) | ((c.username is not None) << 7) | ((c.password is not None) << 6)
    if c.will is not None:
        flags |= 0x04 | (c.will.qos << 3) | (c.will.retain << 5)
    body = _str("MQTT") + bytes((c.protocol_version, flags)) + struct.pack("!H", c.keepalive)
    if v5:
        body += _encode_properties(c.properties)
    body += _str(c.client_id)
    if c.will is not None:
        if v5:
            body += _encode_properties(c.will.properties)
        body += _str(c.will.topic) + _bin(c.will.payload)
    if c.username is not None:
        body += _str(c.username)
    if c.password is not None:
        body += _bin(c.password)
    return bytes((PacketType.CONNECT << 4,)) + _varint(len(body)) + body
