"""Dead letters: every message ingest refuses, kept with its reason.

Nothing is dropped silently and nothing crashes the worker: a payload that does
not parse, speaks another protocol version, claims another cabinet than its
topic, comes from a cabinet nobody provisioned, or makes the rules fail is
stored in ``dead_letters`` with the topic, the raw bytes and why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg

__all__ = ["DeadLetter", "Reason", "write_dead_letters"]

logger = logging.getLogger(__name__)


class Reason(StrEnum):
    """Why a message was refused (stored in ``dead_letters.reason``)."""

    MALFORMED = "malformed"  # not JSON, wrong fields or types
    UNSUPPORTED_VERSION = "unsupported_version"  # unknown ``v``
    TOO_LARGE = "too_large"
    INVALID_TOPIC = "invalid_topic"  # not {prefix}/{cabinet}/{uplink channel}
    CABINET_MISMATCH = "cabinet_mismatch"  # payload names another cabinet than the topic
    UNKNOWN_CABINET = "unknown_cabinet"  # nobody provisioned this cabinet
    PROCESSING_ERROR = "processing_error"  # the rules refused it (bug or bad data)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: Reason
    detail: str
    received_at: datetime


def write_dead_letters(conn: psycopg.Connection[Any], letters: Sequence[DeadLetter]) -> None:
    """Insert ``letters`` in the caller's transaction."""
    if not letters:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO dead_letters (received_at, topic, payload, reason, detail)"
            " VALUES (%s, %s, %s, %s, %s)",
            [(d.received_at, d.topic, d.payload, d.reason.value, d.detail[:1000]) for d in letters],
        )
    for d in letters:
        logger.warning("dead letter on %s: %s (%s)", d.topic, d.reason.value, d.detail)
