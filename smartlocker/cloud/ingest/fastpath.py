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

_MESSAGE_ID = rb"[A-Za-z0-9_-]{1,64}"
_CABINET_ID = rb"[a-z0-9][a-z0-9-]{0,62}"
_COMPARTMENT_ID = rb"[A-Za-z0-9][A-Za-z0-9-]{0,31}"
_TS = rb"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z"
# A non-negative JSON number without exponent, few enough digits to stay exact-ish
# and finite; float() rounds it the way the JSON parser does (correctly).
_SECONDS = rb"(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,17})?"

_EVENT: Final = re.compile(
    rb'\{"v":1,"id":"('
    + _MESSAGE_ID
    + rb')","ts":"('
    + _TS
    + rb')","cabinet":"('
    + _CABINET_ID
    + rb')","seq":([1-9][0-9]{0,17}),"type":"(?:'
    + rb'(door_opened)","compartment":"('
    + _COMPARTMENT_ID
    + rb')","granted":(?:true|false)'
    + rb'|(door_closed)","compartment":"('
    + _COMPARTMENT_ID
    + rb')","open_seconds":(?:null|'
    + _SECONDS
    + rb"))\}"
)


#: The columns of one event row: cabinet, seq, ts, id, type, compartment (``body``
#: is the payload itself). A plain tuple: cheaper to build than a named one.
EventColumns = tuple[str, int, datetime, str, str, str | None]


def parse_event(payload: bytes) -> EventColumns | None:
    """The columns of a hot event in the agent's encoding, or ``None`` (use ``decode``)."""
    m = _EVENT.fullmatch(payload)
    if m is None:
        return None
    try:
        ts = datetime.fromisoformat(m[2].decode())
    except ValueError:  # not a calendar date or time (Feb 30, 25:00, second 60)
        return None
    if m[5] is not None:
        return (m[3].decode(), int(m[4]), ts, m[1].decode(), "door_opened", m[6].decode())
    return (m[3].decode(), int(m[4]), ts, m[1].decode(), "door_closed", m[8].decode())
