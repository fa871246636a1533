"""The codec: every packet survives encode → frame → decode, and no bytes crash it."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartlocker.embedded.pybroker.codec import (
    Framer,
    UnsupportedVersion,
    decode,
    encode,
)
from smartlocker.embedded.pybroker.errors import (
    MalformedPacket,
    PacketTooLarge,
    ProtocolViolation,
)
from smartlocker.embedded.pybroker.packets import (
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
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)

text = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=20)
u16 = st.integers(1, 0xFFFF)
properties = st.fixed_dictionaries(
    {},
    optional={
        Prop.PAYLOAD_FORMAT_INDICATOR: st.integers(0, 1),
        Prop.MESSAGE_EXPIRY_INTERVAL: st.integers(0, 2**32 - 1),
        Prop.CONTENT_TYPE: text,
        Prop.CORRELATION_DATA: st.binary(max_size=20),
        Prop.SUBSCRIPTION_IDENTIFIER: st.lists(
            st.integers(1, 268_435_455), min_size=1, max_size=3
        ).map(tuple),
        Prop.USER_PROPERTY: st.lists(st.tuples(text, text), min_size=1, max_size=3).map(tuple),
        Prop.REASON_STRING: text,
        Prop.RECEIVE_MAXIMUM: u16,
    },
)
subscriptions = st.builds(
    Subscription,
    topic_filter=text,
    qos=st.integers(0, 2),
    no_local=st.booleans(),
    retain_as_published=st.booleans(),
    retain_handling=st.integers(0, 2),
)


@st.composite
def publishes(draw: st.DrawFn) -> Publish:
    qos = draw(st.integers(0, 2))
    return Publish(
        topic=draw(text),
        payload=draw(st.binary(max_size=300)),
        qos=qos,
        retain=draw(st.booleans()),
        dup=draw(st.booleans()) if qos else False,
        packet_id=draw(u16) if qos else None,
        properties=draw(properties),
    )


@st.composite
def connects(draw: st.DrawFn) -> Connect:
    version = draw(st.sampled_from([MQTT_311, MQTT_5]))
    username = draw(st.none() | text)
    will = draw(
        st.none()
        | st.builds(
            Will,
            topic=text,
            payload=st.binary(max_size=50),
            qos=st.integers(0, 2),
            retain=st.booleans(),
            properties=properties,
        )
    )
    return Connect(
        client_id=draw(text),
        protocol_version=version,
        clean_start=draw(st.booleans()),
        keepalive=draw(st.integers(0, 0xFFFF)),
        username=username,
        # 3.1.1 allows a password only with a user name.
        password=draw(st.none() | st.binary(max_size=30))
        if username is not None or version == MQTT_5
        else None,
        will=will,
        properties=draw(properties),
    )


codes = st.integers(0, 255)
packets = st.one_of(
    connects(),
    st.builds(Connack, reason_code=codes, session_present=st.booleans(), properties=properties),
    publishes(),
    st.builds(
        Puback,
        packet_id=u16,
        reason_code=codes,
        properties=properties,
        kind=st.sampled_from(
            [PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP]
        ),
    ),
    st.builds(
        Subscribe,
        packet_id=u16,
        subscriptions=st.lists(subscriptions, min_size=1, max_size=4).map(tuple),
        properties=properties,
    ),
    st.builds(
        Suback,
        packet_id=u16,
        reason_codes=st.lists(codes, max_size=4).map(tuple),
        properties=properties,
    ),
    st.builds(
        Unsubscribe,
        packet_id=u16,
        topic_filters=st.lists(text, min_size=1, max_size=4).map(tuple),
        properties=properties,
    ),
    st.builds(
        Unsuback,
        packet_id=u16,
        reason_codes=st.lists(codes, max_size=4).map(tuple),
        properties=properties,
    ),
    st.just(Pingreq()),
    st.just(Pingresp()),
    st.builds(Disconnect, reason_code=codes, properties=properties),
    st.builds(Auth, reason_code=codes, properties=properties),
)


def _roundtrip(packet: Packet, version: int) -> Packet:
    data = encode(packet, version)
    framer = Framer()
    frames = []
    for i in range(len(data)):  # byte by byte: the framer must cope with any split
        frames += framer.feed(data[i : i + 1])
    ((first, body),) = frames
    return decode(first, body, version)


@given(packets)
def test_mqtt5_roundtrip(packet: Packet) -> None:
    version = packet.protocol_version if isinstance(packet, Connect) else MQTT_5
    expected = packet
    if isinstance(packet, Connect) and version == MQTT_311:
        expected = _without_properties(packet, MQTT_311)
    assert _roundtrip(packet, version) == expected


def _without_properties(packet: Packet, version: int) -> Packet:
    """What 3.1.1 keeps of a packet: no properties, fewer reason codes and options."""
    match packet:
        case Connect(will=will):
            return replace(packet, properties={}, will=will and replace(will, properties={}))
        case Connack():
            table = {0x00: 0, 0x84: 1, 0x85: 2, 0x86: 4, 0x87: 5, 0x8C: 5}
            return replace(packet, properties={}, reason_code=table.get(packet.reason_code, 3))
        case Puback() | Disconnect() | Auth():
            return replace(packet, properties={}, reason_code=0)
        case Subscribe():
            subs = tuple(Subscription(s.topic_filter, s.qos) for s in packet.subscriptions)
            return replace(packet, properties={}, subscriptions=subs)
        case Suback():
            codes = tuple(c if c < 0x80 else 0x80 for c in packet.reason_codes)
            return replace(packet, properties={}, reason_codes=codes)
        case Unsuback():
            return replace(packet, properties={}, reason_codes=())
        case Publish() | Unsubscribe():
            return replace(packet, properties={})
    return packet


@given(packets.filter(lambda p: not isinstance(p, Auth | Connect)))
def test_mqtt311_roundtrip_drops_what_311_cannot_say(packet: Packet) -> None:
    assert _roundtrip(packet, MQTT_311) == _without_properties(packet, MQTT_311)


@given(st.binary(max_size=200), st.sampled_from([MQTT_311, MQTT_5]))
def test_arbitrary_bytes_decode_or_raise_a_protocol_error(data: bytes, version: int) -> None:
    framer = Framer(max_packet_size=150)
    code = 0
    try:
        for first, body in framer.feed(data):
            decode(first, body, version)
    except ProtocolViolation as exc:
        code = exc.reason_code
    assert code == 0 or 0x80 <= code <= 0xA2


@given(packets, st.data())
def test_corrupted_packets_decode_or_raise_a_protocol_error(
    packet: Packet, data: st.DataObject
) -> None:
    version = packet.protocol_version if isinstance(packet, Connect) else MQTT_5
    raw = bytearray(encode(packet, version))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    try:
        for first, body in Framer().feed(bytes(raw)):
            decode(first, body, version)
    except ProtocolViolation:
        pass


MALFORMED = [
    ("reserved type 0", b"\x00\x00", MalformedPacket),
    ("PUBLISH QoS 3", b"\x36\x05\x00\x01a\x00\x01", MalformedPacket),
    ("QoS 0 with DUP", b"\x38\x03\x00\x01a", MalformedPacket),
    ("packet id 0", b"\x32\x06\x00\x01a\x00\x00\x00", MalformedPacket),
    ("SUBSCRIBE bad flags", b"\x80\x06\x00\x01\x00\x00\x01a", MalformedPacket),
    ("SUBSCRIBE no filter", b"\x82\x03\x00\x01\x00", ProtocolViolation),
    ("SUBSCRIBE options reserved bits", b"\x82\x07\x00\x01\x00\x00\x01a\xc1", MalformedPacket),
    ("string not UTF-8", b"\x30\x04\x00\x02\xff\xfe", MalformedPacket),
    ("string with U+0000", b"\x30\x04\x00\x02a\x00", MalformedPacket),
    ("truncated string", b"\x30\x03\x00\x05a", MalformedPacket),
    ("unknown property", b"\x30\x06\x00\x01a\x02\x7f\x00", MalformedPacket),
    ("property twice", b"\x30\x08\x00\x01a\x04\x01\x01\x01\x01", ProtocolViolation),
    ("PINGREQ with a body", b"\xc0\x01\x00", MalformedPacket),
    ("CONNECT reserved flag", b"\x10\x0b\x00\x04MQTT\x05\x01\x00\x3c\x00\x00\x00", MalformedPacket),
    ("CONNECT MQTT 3.1", b"\x10\x0d\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x00", UnsupportedVersion),
    ("CONNECT level 6", b"\x10\x0b\x00\x04MQTT\x06\x02\x00\x3c\x00\x00\x00", UnsupportedVersion),
]


@pytest.mark.parametrize(("why", "data", "error"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_packets_name_their_reason(why: str, data: bytes, error: type) -> None:
    def decode_all() -> None:
        for first, body in Framer().feed(data):
            decode(first, body, MQTT_5)

    with pytest.raises(error):
        decode_all()


def test_framer_rejects_oversize_and_overlong_lengths() -> None:
    with pytest.raises(PacketTooLarge):
        list(Framer(max_packet_size=100).feed(b"\x30\x80\x01"))  # 128 bytes announced
    with pytest.raises(MalformedPacket):
        list(Framer().feed(b"\x30\xff\xff\xff\xff\x01"))
