"""Hypothesis strategies that build every protocol message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

from smartlocker.protocol import (
    Ack,
    AckOutcome,
    Alarm,
    AlarmKind,
    BootEvent,
    CodeAccepted,
    CodeGrant,
    CodeKind,
    CodeRejected,
    CodeRejectReason,
    CompartmentReport,
    DesiredCompartment,
    DesiredState,
    DoorClosed,
    DoorOpened,
    DoorState,
    Receipt,
    Reported,
    ShutdownEvent,
    Status,
    Telemetry,
    UnlockCommand,
    Unlocked,
    UnlockSource,
)

cabinet_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True)
compartment_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}", fullmatch=True)
message_ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
parcel_refs = message_ids
code_hashes = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
short_text = st.text(max_size=200)
floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
offsets = st.integers(min_value=-23 * 60, max_value=23 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
timestamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=offsets
)
seqs = st.integers(min_value=1, max_value=2**53)
counts = st.integers(min_value=0, max_value=2**53)

common = {"id": message_ids, "ts": timestamps, "cabinet": cabinet_ids}

events = st.one_of(
    st.builds(BootEvent, seq=seqs, agent_version=short_text, **common),
    st.builds(ShutdownEvent, seq=seqs, reason=short_text, **common),
    st.builds(DoorOpened, seq=seqs, compartment=compartment_ids, granted=st.booleans(), **common),
    st.builds(
        DoorClosed,
        seq=seqs,
        compartment=compartment_ids,
        open_seconds=st.none() | st.floats(min_value=0, allow_infinity=False),
        **common,
    ),
    st.builds(
        Unlocked,
        seq=seqs,
        compartment=compartment_ids,
        source=st.sampled_from(UnlockSource),
        command_id=st.none() | message_ids,
        parcel=st.none() | parcel_refs,
        pulse_ms=st.integers(min_value=1, max_value=10_000),
        **common,
    ),
    st.builds(
        CodeAccepted,
        seq=seqs,
        compartment=compartment_ids,
        kind=st.sampled_from(CodeKind),
        parcel=parcel_refs,
        code_hash=code_hashes,
        **common,
    ),
    st.builds(
        CodeRejected,
        seq=seqs,
        kiosk=short_text,
        reason=st.sampled_from(CodeRejectReason),
        attempts=counts,
        locked_until=st.none() | timestamps,
        **common,
    ),
    st.builds(
        Alarm,
        seq=seqs,
        compartment=st.none() | compartment_ids,
        kind=st.sampled_from(AlarmKind),
        active=st.booleans(),
        detail=st.none() | short_text,
        **common,
    ),
)

others_uplink = st.one_of(
    st.builds(
        Telemetry,
        uptime_s=st.floats(min_value=0, allow_infinity=False),
        outbox_depth=counts,
        cpu_temp_c=st.none() | floats,
        compartment_temps=st.dictionaries(compartment_ids, floats, max_size=5),
        **common,
    ),
    st.builds(Status, online=st.booleans(), agent_version=st.none() | short_text, **common),
    st.builds(
        Ack,
        command_id=message_ids,
        compartment=st.none() | compartment_ids,
        outcome=st.sampled_from(AckOutcome),
        reason=st.none() | short_text,
        **common,
    ),
    st.builds(
        Reported,
        desired_version=counts,
        compartments=st.lists(
            st.builds(
                CompartmentReport,
                id=compartment_ids,
                door=st.sampled_from(DoorState),
                enabled=st.booleans(),
            ),
            max_size=5,
        ),
        agent_version=st.none() | short_text,
        **common,
    ),
)

unlock_commands = st.builds(
    UnlockCommand,
    compartment=compartment_ids,
    counter=seqs,
    expires=timestamps,
    reason=st.none() | short_text,
    **common,
)

desired_states = st.builds(
    DesiredState,
    version=seqs,
    compartments=st.lists(
        st.builds(DesiredCompartment, id=compartment_ids, enabled=st.booleans()), max_size=5
    ),
    codes=st.lists(
        st.builds(
            CodeGrant,
            hash=code_hashes,
            compartment=compartment_ids,
            kind=st.sampled_from(CodeKind),
            parcel=parcel_refs,
            valid_until=timestamps,
        ),
        max_size=5,
    ),
    **common,
)

receipts = st.builds(Receipt, upto_seq=counts, **common)

signed_messages = st.one_of(unlock_commands, desired_states)
uplink_messages = st.one_of(events, others_uplink)
downlink_messages = st.one_of(signed_messages, receipts)
all_messages = st.one_of(uplink_messages, downlink_messages)

__all__ = [
    "UTC",
    "all_messages",
    "downlink_messages",
    "events",
    "signed_messages",
    "uplink_messages",
]
