"""Openings of a parcel's compartment asked through the API, and the app's pickup code.

(Written for the operator API; it only reads, and leans on :mod:`.lifecycle`.)

An opening is a command with a purpose (``deposit``, ``pickup``, ``return``); the
``door_closed`` that follows moves the parcel (:mod:`smartlocker.cloud.reactions`).
Whether the parcel's state allows the opening is the lifecycle's transition table:
a deposit needs ``reserved → deposited`` to be allowed, and so on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from smartlocker.protocol import hash_code
from smartlocker.protocol.errors import MalformedMessage

from ..errors import InvalidTransition, NotFound, ValidationFailed
from ..keys import CloudKeys
from .lifecycle import ParcelState, is_allowed

__all__ = ["OPENING_TARGETS", "WrongCode", "check_pickup_code", "parcel_opening"]

#: The state an opening of each purpose leads to once the door closes again.
OPENING_TARGETS = {
    "deposit": ParcelState.DEPOSITED,
    "pickup": ParcelState.PICKED_UP,
    "return": ParcelState.RETURNED,
}


class WrongCode(ValidationFailed):
    """The code is not the parcel's valid pickup code (unknown, used, revoked, expired)."""

    type = "wrong-code"
    status = 422


def parcel_opening(conn: psycopg.Connection[Any], parcel: str, purpose: str) -> tuple[str, str]:
    """``(cabinet, compartment)`` to open for ``purpose``; raises if the state forbids it."""
    target = OPENING_TARGETS[purpose]
    row = conn.execute(
        "SELECT state, cabinet, compartment FROM parcels WHERE id = %s", (parcel,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no parcel {parcel}", parcel=parcel)
    if not is_allowed(row[0], target):
        raise InvalidTransition(parcel, row[0], target.value)
    return row[1], row[2]


def check_pickup_code(
    conn: psycopg.Connection[Any], keys: CloudKeys, parcel: str, code: str, *, now: datetime
) -> tuple[str, str]:
    """The compartment to open when ``code`` is the parcel's valid pickup code."""
    cabinet, compartment = parcel_opening(conn, parcel, "pickup")
    try:
        digest = hash_code(keys.code_key(cabinet), code)
    except MalformedMessage:
        raise WrongCode("that is not the parcel's pickup code", parcel=parcel) from None
    row = conn.execute(
        "SELECT 1 FROM codes WHERE parcel = %s AND kind = 'pickup' AND hash = %s"
        " AND used_at IS NULL AND revoked_at IS NULL AND valid_until > %s",
        (parcel, digest, now),
    ).fetchone()
    if row is None:
        raise WrongCode("that is not the parcel's pickup code", parcel=parcel)
    return cabinet, compartment
