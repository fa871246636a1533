"""Storage fees: a pure function of the policy and the storage time."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartlocker.cloud.rules.fees import FeePolicy, compute_fee
from tests.cloud.conftest import T0

DAILY = FeePolicy(free_hours=24, unit="day", fee_per_unit=Decimal("2.50"), cap=Decimal("10.00"))


@pytest.mark.parametrize(
    ("stored", "fee"),
    [
        (timedelta(hours=0), "0.00"),
        (timedelta(hours=24), "0.00"),  # exactly the free time
        (timedelta(hours=24, seconds=1), "2.50"),  # a started day counts
        (timedelta(hours=48), "2.50"),
        (timedelta(hours=48, minutes=1), "5.00"),
        (timedelta(days=30), "10.00"),  # capped
    ],
)
def test_daily_fee_per_started_day_with_cap(stored: timedelta, fee: str) -> None:
    assert compute_fee(DAILY, T0, T0 + stored) == Decimal(fee)


def test_hourly_fee_without_cap() -> None:
    hourly = FeePolicy(free_hours=2, unit="hour", fee_per_unit=Decimal("0.40"))
    assert compute_fee(hourly, T0, T0 + timedelta(hours=2, minutes=30)) == Decimal("0.40")
    assert compute_fee(hourly, T0, T0 + timedelta(hours=102)) == Decimal("40.00")


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="unit"):
        FeePolicy(unit="week")
    with pytest.raises(ValueError, match="negative"):
        FeePolicy(fee_per_unit=Decimal("-1"))


@given(
    a=st.integers(min_value=0, max_value=10**7),
    b=st.integers(min_value=0, max_value=10**7),
)
def test_fee_never_decreases_with_time_and_respects_the_cap(a: int, b: int) -> None:
    early, late = sorted((a, b))
    f1 = compute_fee(DAILY, T0, T0 + timedelta(seconds=early))
    f2 = compute_fee(DAILY, T0, T0 + timedelta(seconds=late))
    assert Decimal(0) <= f1 <= f2 <= Decimal("10.00")
