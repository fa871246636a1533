"""Storage fees: free hours after the deposit, then a fee per started unit, capped.

:func:`compute_fee` is pure (Decimal, no I/O); :func:`load_fee_policy` reads a
site's policy (no row: no fee).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

__all__ = ["FeePolicy", "compute_fee", "load_fee_policy"]

_UNITS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


@dataclass(frozen=True, slots=True)
class FeePolicy:
    free_hours: int = 24
    unit: str = "day"
    fee_per_unit: Decimal = Decimal("0")
    cap: Decimal | None = None
    currency: str = "EUR"

    def __post_init__(self) -> None:
        if self.unit not in _UNITS:
            raise ValueError(f"fee unit must be hour or day, not {self.unit!r}")
        if self.free_hours < 0 or self.fee_per_unit < 0 or (self.cap is not None and self.cap < 0):
            raise ValueError("fee policy values must not be negative")


#: No fee at all (sites without a policy row).
FREE = FeePolicy(fee_per_unit=Decimal("0"))


def compute_fee(policy: FeePolicy, deposited_at: datetime, until: datetime) -> Decimal:
    """The fee for storage from ``deposited_at`` to ``until``.

    Nothing within the free hours; after them, ``fee_per_unit`` for every started
    unit (an hour or a day), never more than ``cap``. Rounded to cents.
    """
    overtime = until - deposited_at - timedelta(hours=policy.free_hours)
    if overtime <= timedelta(0):
        return Decimal("0.00")
    units = math.ceil(overtime / _UNITS[policy.unit])
    fee = policy.fee_per_unit * units
    if policy.cap is not None:
        fee = min(fee, policy.cap)
    return fee.quantize(Decimal("0.01"))


def load_fee_policy(conn: psycopg.Connection[Any], site: str) -> FeePolicy:
    row = conn.execute(
        "SELECT free_hours, unit, fee_per_unit, cap, currency FROM fee_policies WHERE site = %s",
        (site,),
    ).fetchone()
    if row is None:
        return FREE
    return FeePolicy(
        row[0], row[1], Decimal(row[2]), None if row[3] is None else Decimal(row[3]), row[4]
    )
