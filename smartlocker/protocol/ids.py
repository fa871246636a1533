"""Identifier rules shared by topics, messages, the API and the database."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from pydantic import StringConstraints

from .errors import InvalidId

__all__ = [
    "CABINET_ID_PATTERN",
    "COMPARTMENT_ID_PATTERN",
    "MESSAGE_ID_PATTERN",
    "CabinetId",
    "CompartmentId",
    "MessageId",
    "new_message_id",
    "validate_cabinet_id",
    "validate_compartment_id",
]

#: CONTRACT.md: cabinet ids are also MQTT usernames and client ids.
CABINET_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
#: Compartments carry the labels printed on the doors ("A1", "12").
COMPARTMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$"
MESSAGE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

_CABINET_RE = re.compile(CABINET_ID_PATTERN)
_COMPARTMENT_RE = re.compile(COMPARTMENT_ID_PATTERN)

CabinetId = Annotated[str, StringConstraints(pattern=CABINET_ID_PATTERN)]
CompartmentId = Annotated[str, StringConstraints(pattern=COMPARTMENT_ID_PATTERN)]
MessageId = Annotated[str, StringConstraints(pattern=MESSAGE_ID_PATTERN)]


def validate_cabinet_id(value: str) -> str:
    """Return ``value`` if it is a valid cabinet id, else raise :class:`InvalidId`."""
    if not isinstance(value, str) or not _CABINET_RE.fullmatch(value):
        raise InvalidId(f"invalid cabinet id: {value!r}")
    return value


def validate_compartment_id(value: str) -> str:
    """Return ``value`` if it is a valid compartment id, else raise :class:`InvalidId`."""
    if not isinstance(value, str) or not _COMPARTMENT_RE.fullmatch(value):
        raise InvalidId(f"invalid compartment id: {value!r}")
    return value


def new_message_id() -> str:
    """A fresh random message id (UUID4, hex)."""
    return uuid.uuid4().hex
