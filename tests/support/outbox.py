"""Reading the outbound-message outbox in tests: what a recipient would be sent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = ["QueuedCode", "queued_codes"]


@dataclass(frozen=True)
class QueuedCode:
    id: int
    parcel: str
    destination: str
    channel: str
    code: str | None


def queued_codes(conn: psycopg.Connection[Any], parcel: str | None = None) -> list[QueuedCode]:
    """Pickup-code messages not yet sent (the clear code is there only until then)."""
    rows = conn.execute(
        "SELECT id, parcel, destination, channel, secret_payload->>'code' FROM outbound_messages"
        " WHERE topic = 'code_issued' AND status = 'pending'"
        " AND (%s::text IS NULL OR parcel = %s) ORDER BY id",
        (parcel, parcel),
    ).fetchall()
    return [QueuedCode(*row) for row in rows]
