"""Pickup and deposit codes: issued from the CSPRNG, stored only as keyed hashes.

:func:`issue_code` returns the clear code once, to the caller (who hands it to
the person who needs it); the database keeps ``hash_code(code_key(cabinet),
code)`` only. A code is unique among the cabinet's active codes (a partial
unique index; a collision draws again) and a parcel has at most one active code
of each kind (issuing a new one revokes the old).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import psycopg

from smartlocker.protocol import CODE_DIGITS, generate_code, hash_code

from ..errors import Conflict, NotFound
from ..keys import CloudKeys

__all__ = ["CODE_KINDS", "issue_code", "revoke_codes"]

logger = logging.getLogger(__name__)

CODE_KINDS = ("pickup", "deposit")
_MAX_DRAWS = 20


def issue_code(
    conn: psycopg.Connection[Any],
    keys: CloudKeys,
    parcel: str,
    kind: str,
    *,
    valid_until: datetime,
    now: datetime,
    digits: int = CODE_DIGITS,
) -> str:
    """A new code of ``kind`` for ``parcel``; returns the clear code (never stored)."""
    if kind not in CODE_KINDS:
        raise ValueError(f"unknown code kind {kind!r}")
    row = conn.execute(
        "SELECT cabinet, compartment FROM parcels WHERE id = %s", (parcel,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no parcel {parcel}", parcel=parcel)
    cabinet, compartment = row
    code_key = keys.code_key(cabinet)
    revoke_codes(conn, parcel, kind, now=now, reason="reissued")
    for _ in range(_MAX_DRAWS):
        code = generate_code(digits)
        try:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO codes (parcel, cabinet, compartment, kind, hash,"
                    " issued_at, valid_until) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (
                        parcel,
                        cabinet,
                        compartment,
                        kind,
                        hash_code(code_key, code),
                        now,
                        valid_until,
                    ),
                )
        except psycopg.errors.UniqueViolation:
            logger.info("code collision on cabinet %s; drawing again", cabinet)
            continue
        return code
    raise Conflict(f"could not draw a unique code for cabinet {cabinet}", cabinet=cabinet)


def revoke_codes(
    conn: psycopg.Connection[Any],
    parcel: str,
    kind: str | None = None,
    *,
    now: datetime,
    reason: str,
) -> int:
    """Revoke the parcel's active codes (of ``kind``, or all); returns how many."""
    cur = conn.execute(
        "UPDATE codes SET revoked_at = %s, revoked_reason = %s"
        " WHERE parcel = %s AND (%s::text IS NULL OR kind = %s)"
        " AND used_at IS NULL AND revoked_at IS NULL",
        (now, reason, parcel, kind, kind),
    )
    return cur.rowcount
