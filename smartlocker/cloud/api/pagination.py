"""Cursor pagination: an opaque token holding the last row's sort key.

Lists are ordered by a unique key (e.g. ``(created_at, id)``); the next page asks
for rows after the cursor's key, so pages stay stable while rows are added.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import ValidationFailed

__all__ = ["MAX_LIMIT", "Limit", "PageQuery", "decode_cursor", "encode_cursor"]

MAX_LIMIT = 200
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description="Page size (1 to 200).")]


class PageQuery(BaseModel):
    """``limit`` and ``cursor``, shared by every list endpoint."""

    model_config = ConfigDict(extra="forbid")

    limit: Limit = 50
    cursor: Annotated[
        str | None,
        Field(max_length=512, description="`next_cursor` of the previous page."),
    ] = None


def encode_cursor(key: Sequence[Any]) -> str:
    """The opaque cursor of a sort key (datetimes as ISO strings)."""
    parts = [v.isoformat() if isinstance(v, datetime) else v for v in key]
    raw = json.dumps(parts, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: Sequence[type]) -> list[Any]:
    """The sort key of a cursor, checked against ``kinds``; 400 if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
        if not isinstance(parts, list) or len(parts) != len(kinds):
            raise ValueError("wrong shape")
        out: list[Any] = []
        for kind, value in zip(kinds, parts, strict=True):
            if kind is datetime:
                when = datetime.fromisoformat(value)
                if when.tzinfo is None:
                    raise ValueError("naive time")
                out.append(when)
            elif isinstance(value, kind) and not isinstance(value, bool):
                out.append(value)
            else:
                raise ValueError("wrong type")
        return out
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed(
            "invalid cursor",
            [{"loc": ["query", "cursor"], "msg": "not a cursor", "type": "cursor"}],
        ) from None
