"""Checking a typed pickup or deposit code against the desired state, offline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from smartlocker.protocol import CodeGrant, CodeRejectReason, MalformedMessage, hash_code

from .desired import DesiredView

__all__ = ["CodeVerdict", "check_code"]


@dataclass(frozen=True, slots=True)
class CodeVerdict:
    grant: CodeGrant | None
    reason: CodeRejectReason | None
    code_hash: str | None


def check_code(
    code: object,
    *,
    code_key: bytes,
    desired: DesiredView,
    now: datetime,
    used: Callable[[str], bool],
) -> CodeVerdict:
    """A grant for a valid code, or the reason it is refused (one hash, one look-up)."""
    if not isinstance(code, str):
        return CodeVerdict(None, CodeRejectReason.MALFORMED, None)
    try:
        code_hash = hash_code(code_key, code)
    except MalformedMessage:
        return CodeVerdict(None, CodeRejectReason.MALFORMED, None)
    grant = desired.codes.get(code_hash)
    if grant is None or used(code_hash):
        return CodeVerdict(None, CodeRejectReason.UNKNOWN, code_hash)
    if grant.valid_until <= now:
        return CodeVerdict(None, CodeRejectReason.EXPIRED, code_hash)
    if not desired.is_enabled(grant.compartment):
        return CodeVerdict(None, CodeRejectReason.DISABLED, code_hash)
    return CodeVerdict(grant, None, code_hash)
