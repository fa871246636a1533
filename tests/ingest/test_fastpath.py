"""The hot-event fast path accepts only what ``protocol.decode`` accepts, with its fields."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from smartlocker.cloud.ingest.fastpath import _EVENT, EventColumns, parse_event
from smartlocker.protocol import Channel, DoorClosed, DoorOpened, ProtocolError, decode, encode

CABINETS = st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True)
COMPARTMENTS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}", fullmatch=True)
IDS = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
TIMES = st.datetimes(timezones=st.just(UTC))


def columns_of(payload: bytes) -> EventColumns | None:
    """What ``decode`` makes of a payload, as columns (None: refused)."""
    try:
        m = decode(Channel.EVENTS, payload)
    except ProtocolError:
        return None
    return (m.cabinet, m.seq, m.ts, m.id, m.type, getattr(m, "compartment", None))


def check(payload: bytes) -> EventColumns | None:
    fast = parse_event(payload)
    if fast is not None:
        slow = columns_of(payload)
        assert slow is not None, f"fast path accepted what decode refuses: {payload!r}"
        assert fast == slow
        assert fast[2].utcoffset() is not None
        assert fast[2].utcoffset() == slow[2].utcoffset()
    return fast


@settings(max_examples=500)
@given(st.from_regex(_EVENT, fullmatch=True))
def test_everything_the_pattern_matches_decodes_to_the_same_columns(payload: str) -> None:
    check(payload.encode())


@settings(max_examples=300)
@given(
    cabinet=CABINETS,
    compartment=COMPARTMENTS,
    message_id=IDS,
    ts=TIMES,
    seq=st.integers(1, 2**70),
    granted=st.booleans(),
    open_seconds=st.none() | st.floats(min_value=0, allow_nan=False) | st.integers(0, 2**60),
    closed=st.booleans(),
)
def test_the_agents_encoding_takes_the_fast_path(
    cabinet: str,
    compartment: str,
    message_id: str,
    ts: datetime,
    seq: int,
    granted: bool,
    open_seconds: float | None,
    closed: bool,
) -> None:
    common = {"cabinet": cabinet, "id": message_id, "ts": ts, "seq": seq}
    event = (
        DoorClosed(**common, compartment=compartment, open_seconds=open_seconds)
        if closed
        else DoorOpened(**common, compartment=compartment, granted=granted)
    )
    payload = encode(event)
    fast = check(payload)
    ordinary = (
        seq < 10**18
        and ts.year >= 1
        and (
            not closed
            or open_seconds is None
            or (float(open_seconds) < 1e15 and b"e" not in payload)
        )
    )
    if ordinary:
        assert fast is not None, payload
        assert fast[1:3] == (seq, ts)
        assert fast[4] == event.type


PAYLOAD = (
    b'{"v":1,"id":"a1","ts":"2026-11-21T08:00:00.123Z","cabinet":"cab-1","seq":7,'
    b'"type":"door_closed","compartment":"A1","open_seconds":2.5}'
)


@settings(max_examples=1000)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(PAYLOAD) - 1),
            st.sampled_from(["replace", "insert", "delete"]),
            st.binary(min_size=1, max_size=3) | st.sampled_from([b'"', b"\\", b"0", b"9", b" "]),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_mutated_payloads_are_never_accepted_against_decode(
    edits: list[tuple[int, str, bytes]],
) -> None:
    payload = bytearray(PAYLOAD)
    for at, how, data in edits:
        at = min(at, len(payload))
        if how == "replace":
            payload[at : at + len(data)] = data
        elif how == "insert":
            payload[at:at] = data
        else:
            del payload[at : at + len(data)]
    check(bytes(payload))


def test_fixed_cases() -> None:
    assert check(PAYLOAD) is not None
    refused_or_slow = [
        PAYLOAD.replace(b'"v":1', b'"v":2'),
        PAYLOAD.replace(b"2026-11-21", b"2026-02-30"),
        PAYLOAD.replace(b"08:00:00", b"24:00:00"),
        PAYLOAD.replace(b"08:00:00", b"23:59:60"),
        PAYLOAD.replace(b'"seq":7', b'"seq":0'),
        PAYLOAD.replace(b'"seq":7', b'"seq":07'),
        PAYLOAD.replace(b'"cabinet":"cab-1"', b'"cabinet":"Cab-1"'),
        PAYLOAD.replace(b"2.5", b"-2.5"),
        PAYLOAD.replace(b"2.5", b"2e5"),
        PAYLOAD.replace(b'"A1"', b'"A\\u0031"'),
        PAYLOAD.replace(b"}", b',"x":1}'),
        PAYLOAD + b" ",
        PAYLOAD.replace(b"Z", b"+01:00"),
    ]
    for payload in refused_or_slow:
        assert parse_event(payload) is None, payload
    escaped = PAYLOAD.replace(b'"A1"', b'"A\\u0031"')
    assert columns_of(escaped) == parse_event(PAYLOAD)  # decode still takes it
    assert parse_event(PAYLOAD.replace(b"2.5", b"null")) is not None
    opened = encode(DoorOpened(cabinet="c", seq=1, compartment="A", granted=False))
    got = check(opened)
    assert got is not None
    assert got[4] == "door_opened"


@settings(max_examples=500)
@given(
    cabinet=CABINETS,
    compartment=COMPARTMENTS,
    message_id=IDS,
    ts=TIMES,
    digits=st.integers(0, 6),
    seq=st.from_regex(r"[1-9][0-9]{0,17}", fullmatch=True),
    tail=st.sampled_from(["opened-true", "opened-false", "closed-null"])
    | st.from_regex(r"(0|[1-9][0-9]{0,15})(\.[0-9]{1,17})?", fullmatch=True),
)
def test_composed_payloads_in_every_allowed_form(
    cabinet: str,
    compartment: str,
    message_id: str,
    ts: datetime,
    digits: int,
    seq: str,
    tail: str,
) -> None:
    fraction = f".{ts.microsecond:06d}"[: 1 + digits] if digits else ""
    stamp = ts.replace(tzinfo=None, microsecond=0).isoformat() + fraction
    if tail.startswith("opened"):
        kind = f'"type":"door_opened","compartment":"{compartment}","granted":{tail[7:]}'
    else:
        seconds = "null" if tail == "closed-null" else tail
        kind = f'"type":"door_closed","compartment":"{compartment}","open_seconds":{seconds}'
    payload = (
        f'{{"v":1,"id":"{message_id}","ts":"{stamp}Z","cabinet":"{cabinet}","seq":{seq},{kind}}}'
    ).encode()
    fast = check(payload)
    assert fast is not None, payload
    assert fast[2] == datetime.fromisoformat(stamp + "+00:00")
