"""JSON Schemas of every message, per channel, generated from the models."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from .messages import CHANNEL_MESSAGES

__all__ = ["message_schemas"]


def message_schemas() -> dict[str, Any]:
    """One JSON Schema per channel (``events`` is a union tagged by ``type``)."""
    out: dict[str, Any] = {}
    for channel, types in CHANNEL_MESSAGES.items():
        union: Any = types[0]
        for extra in types[1:]:
            union = union | extra
        schema = TypeAdapter(union).json_schema(mode="serialization")
        schema["title"] = f"lockers/{{cabinet}}/{channel.value}"
        out[channel.value] = schema
    return out
