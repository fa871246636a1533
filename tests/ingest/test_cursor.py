"""The receipt cursor (pure): contiguous advance, gaps, seq restarts after a re-image."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from smartlocker.cloud.ingest.receipts import Cursor, EventKey, advance, advance_run

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


CURSORS = st.builds(
    Cursor,
    cabinet=st.just("c"),
    committed_seq=st.integers(0, 12),
    ahead=st.sets(st.integers(1, 20), max_size=3),
    epoch_ts=st.none() | st.just(T0),
    held_since=st.none() | st.just(T0),
)
EVENTS = st.lists(
    st.tuples(
        st.integers(1, 20),
        st.integers(-2, 2).map(lambda d: T0 + timedelta(seconds=d)),
        st.booleans(),
        st.booleans(),
    ).map(lambda t: EventKey(*t)),
    max_size=8,
    unique_by=lambda k: (k.seq, k.ts),
)


@given(CURSORS, st.data())
def test_the_shortcut_for_a_contiguous_run_agrees_with_advance(
    cursor: Cursor, data: st.DataObject
) -> None:
    q = cursor.committed_seq
    run = st.lists(st.booleans(), min_size=1, max_size=6).map(
        lambda news: [EventKey(q + 1 + i, T0, n, False) for i, n in enumerate(news)]
    )
    events = data.draw(EVENTS | run | st.permutations(keys(q + 1, q + 2, q + 3)))
    quick = advance_run(cursor, [e.seq for e in events], any(e.boot for e in events))
    if quick is not None:
        full = advance(cursor, events, NOW)
        assert (quick.committed_seq, quick.ahead, quick.epoch_ts, quick.held_since) == (
            full.committed_seq,
            full.ahead,
            full.epoch_ts,
            full.held_since,
        )


def test_the_shortcut_takes_the_usual_batch() -> None:
    c = Cursor("c", committed_seq=4)
    moved = advance_run(c, [7, 5, 6], False)
    assert moved is not None
    assert moved.committed_seq == 7
    gap = advance_run(c, [5, 7], False)
    assert gap is not None
    assert (gap.committed_seq, gap.ahead) == (5, {7})
    assert advance_run(c, [4, 5], False) is None  # 4 is committed already
    assert advance_run(c, [5, 6], True) is None  # a boot
    assert advance_run(Cursor("c", 4, epoch_ts=T0), [5], False) is None  # an epoch
