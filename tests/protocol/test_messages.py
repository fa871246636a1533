"""Every message survives encode → decode; bad input only ever raises ProtocolError."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartlocker.protocol import (
    MAX_PAYLOAD_BYTES,
    BootEvent,
    Channel,
    DoorOpened,
    MalformedMessage,
    PayloadTooLarge,
    ProtocolError,
    UnsupportedVersion,
    channel_of,
    decode,
    decode_downlink,
    decode_uplink,
    encode,
)

from .strategies import all_messages, downlink_messages, uplink_messages

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


@given(all_messages)
def test_every_message_survives_encode_decode_on_its_channel(message: Any) -> None:
    assert decode(channel_of(message), encode(message)) == message


@given(uplink_messages)
def test_uplink_union_decodes_every_uplink_message(message: Any) -> None:
    assert channel_of(message).uplink
    assert decode_uplink(encode(message)) == message


@given(downlink_messages)
def test_downlink_union_decodes_every_downlink_message(message: Any) -> None:
    assert not channel_of(message).uplink
    assert decode_downlink(encode(message)) == message


@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_protocol_errors(payload: bytes) -> None:
    for channel in Channel:
        with contextlib.suppress(ProtocolError):
            decode(channel, payload)


@given(all_messages, st.data())
def test_any_field_replaced_by_any_json_value_raises_only_protocol_errors(
    message: Any, data: st.DataObject
) -> None:
    fields = json.loads(encode(message))
    key = data.draw(st.sampled_from(sorted(fields)))
    fields[key] = data.draw(json_values)
    with contextlib.suppress(ProtocolError):
        decode(channel_of(message), json.dumps(fields))


WRONG_TYPES = [
    ("seq", "1"),
    ("seq", 1.5),
    ("seq", True),
    ("seq", 0),
    ("seq", None),
    ("cabinet", 7),
    ("cabinet", "Bad Cabinet"),
    ("cabinet", ["cab-1"]),
    ("ts", 1700000000),
    ("ts", "yesterday"),
    ("ts", "2026-01-01T00:00:00"),  # RFC 3339 needs an offset
    ("granted", "yes"),
    ("granted", 1),
    ("compartment", None),
    ("id", ""),
    ("type", "door_exploded"),
    ("extra_field", 1),
]


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES)
def test_wrong_types_and_unknown_fields_are_malformed(field: str, value: object) -> None:
    fields = json.loads(encode(DoorOpened(cabinet="cab-1", seq=3, compartment="A1", granted=True)))
    fields[field] = value
    with pytest.raises(MalformedMessage) as info:
        decode(Channel.EVENTS, json.dumps(fields))
    assert info.value.reason == "malformed"


@given(st.integers().filter(lambda v: v != 1) | st.text())
def test_unknown_protocol_version_is_refused_as_such(version: object) -> None:
    fields = json.loads(encode(BootEvent(cabinet="cab-1", seq=1, agent_version="1")))
    fields["v"] = version
    with pytest.raises(UnsupportedVersion):
        decode(Channel.EVENTS, json.dumps(fields))


def test_oversized_payload_is_refused_unread() -> None:
    payload = b'{"v":1,' + b" " * MAX_PAYLOAD_BYTES + b"}"
    with pytest.raises(PayloadTooLarge) as info:
        decode(Channel.DESIRED, payload)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    "payload", [b"", b"null", b"[]", b'"text"', b"{", b"\xff\xfe", b"[" * 100_000, 12]
)
def test_malformed_payloads_give_the_protocol_error(payload: Any) -> None:
    with pytest.raises(MalformedMessage):
        decode(Channel.EVENTS, payload)


def test_a_message_on_the_wrong_channel_is_refused() -> None:
    event = encode(BootEvent(cabinet="cab-1", seq=1, agent_version="1"))
    with pytest.raises(MalformedMessage):
        decode(Channel.COMMANDS, event)


def test_timestamps_are_normalised_to_utc_and_written_with_z() -> None:
    fields = json.loads(encode(BootEvent(cabinet="cab-1", seq=1, agent_version="1")))
    fields["ts"] = "2026-11-21T07:00:00+02:00"
    event = decode(Channel.EVENTS, json.dumps(fields))
    assert json.loads(encode(event))["ts"] == "2026-11-21T05:00:00Z"
