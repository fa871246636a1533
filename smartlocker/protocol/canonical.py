"""The canonical encoding that signatures cover: sorted keys, no whitespace, UTF-8."""

from __future__ import annotations

import json
from typing import Any

from .errors import MalformedMessage

__all__ = ["canonical_json"]


def canonical_json(value: Any) -> bytes:
    """Encode a JSON value canonically; raises :class:`MalformedMessage` if it cannot."""
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode("utf-8")
    except (TypeError, ValueError) as exc:  # unencodable value, NaN, lone surrogate
        raise MalformedMessage(f"value has no canonical JSON encoding: {exc}") from exc
