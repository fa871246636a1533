"""A cheap parse of the hot events, for exactly what ``protocol.decode`` accepts.

Nearly all of ingest's traffic is ``door_opened`` and ``door_closed`` events in
the agent's own encoding (``protocol.encode``: compact JSON, fields in model
order). Validating each through pydantic costs more than everything else the
writer does per event, and the writer needs only the columns. So one regular
expression over the bytes recognises that encoding, with every field held to a
subset of what the models allow (ids to their patterns, ``seq`` to 18 digits,
``ts`` to ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``, printable ASCII, no escapes), and a
real calendar check on ``ts``. What it does not recognise (another layout, an
escape, a big number, any other type) is decoded by ``protocol.decode`` as
before, so nothing is accepted here that ``decode`` would refuse, and the
fields are the ones ``decode`` would give (``tests/ingest/test_fastpath.py``
proves both with hypothesis).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

__all__ = ["EventColumns", "parse_event"]

_MESSAGE_ID = r"[A-Za-z0-9_-]{1,64}"
_CABINET_ID = r"[a-z0-9][a-z0-9-]{0,62}"
_COMPARTMENT_ID = r"[A-Za-z0-9][A-Za-z0-9-]{0,31}"
_TS = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z"
# A non-negative JSON number without exponent; float() rounds it the way the JSON
# parser does (correctly). Not kept: the payload itself is stored.
_SECONDS = r"(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,17})?"

#: Over the payload decoded as ASCII (anything else is not this encoding).
_EVENT: Final = re.compile(
    r'\{"v":1,"id":"('
    + _MESSAGE_ID
    + r')","ts":"('
    + _TS
    + r')","cabinet":"('
    + _CABINET_ID
    + r')","seq":([1-9][0-9]{0,17}),"type":"(?:'
    + r'(door_opened)","compartment":"('
    + _COMPARTMENT_ID
    + r')","granted":(?:true|false)'
    + r'|(door_closed)","compartment":"('
    + _COMPARTMENT_ID
    + r')","open_seconds":(?:null|'
    + _SECONDS
    + r"))\}"
)

#: The columns of one event row: cabinet, seq, ts, id, type, compartment (``body``
#: is the payload itself). A plain tuple: cheaper to build than a named one.
EventColumns = tuple[str, int, datetime, str, str, str | None]

_fromisoformat = datetime.fromisoformat


def parse_event(payload: bytes) -> EventColumns | None:
    """The columns of a hot event in the agent's encoding, or ``None`` (use ``decode``)."""
    try:
        m = _EVENT.fullmatch(payload.decode("ascii"))
    except UnicodeDecodeError:
        return None
    if m is None:
        return None
    message_id, stamp, cabinet, seq, opened, opened_in, _, closed_in = m.groups()
    try:
        ts = _fromisoformat(stamp)
    except ValueError:  # not a calendar date or time (Feb 30, 25:00, second 60)
        return None
    if opened is not None:
        return (cabinet, int(seq), ts, message_id, "door_opened", opened_in)
    return (cabinet, int(seq), ts, message_id, "door_closed", closed_in)
