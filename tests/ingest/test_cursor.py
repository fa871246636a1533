"""The receipt cursor (pure): contiguous advance, gaps, seq restarts after a re-image."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from smartlocker.cloud.ingest.receipts import Cursor, EventKey, advance

T0 = datetime(2026, 11, 21, tzinfo=UTC)
NOW = T0 + timedelta(days=1)


def keys(*seqs: int, new: bool = True, boot: bool = False, at: datetime = T0) -> list[EventKey]:
    return [EventKey(s, at + timedelta(seconds=s), new, boot) for s in seqs]


def test_advances_only_over_contiguous_seqs() -> None:
    c = advance(Cursor("c"), keys(1, 2, 4, 5), NOW)
    assert (c.committed_seq, c.ahead) == (2, {4, 5})
    c = advance(c, keys(3), NOW)
    assert (c.committed_seq, c.ahead) == (5, set())


def test_a_restarted_cabinet_starts_a_new_epoch_at_its_boot() -> None:
    c = advance(Cursor("c"), keys(*range(1, 101)), NOW)
    assert c.committed_seq == 100
    later = T0 + timedelta(hours=1)
    # Re-imaged: seq 2 of the new life arrives before its boot (another worker).
    c = advance(c, keys(2, at=later), NOW)
    assert c.held_since == NOW
    assert not c.receiptable, "a receipt for 100 would lose events"
    c = advance(c, keys(1, boot=True, at=later), NOW)
    assert c.receiptable
    assert c.epoch_ts is not None
    assert c.committed_seq == 1  # 2 came before the epoch began; the outbox resends it
    c = advance(c, keys(2, new=False, at=later), NOW)
    assert c.committed_seq == 2
    # An old-life event redelivered late does not count in the new epoch.
    c = advance(c, keys(3), NOW)
    assert c.committed_seq == 2


def test_duplicate_boot_is_not_a_restart() -> None:
    c = advance(Cursor("c"), keys(1, boot=True) + keys(2, 3), NOW)
    c = advance(c, keys(1, boot=True, new=False), NOW)
    assert (c.committed_seq, c.epoch_ts, c.receiptable) == (3, None, True)


@given(st.permutations(list(range(1, 30))), st.integers(1, 29))
def test_any_order_ends_at_the_highest_contiguous_seq(order: list[int], cut: int) -> None:
    c = Cursor("c")
    for chunk in (order[:cut], order[cut:]):
        c = advance(c, keys(*chunk), NOW)
        assert all(s > c.committed_seq for s in c.ahead)
    assert (c.committed_seq, c.ahead) == (29, set())
