"""The replay window for command counters: each counter once, out of order within the
window, nothing at or below the high-water mark minus the window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smartlocker.protocol import REPLAY_WINDOW, ReplayWindow

W = REPLAY_WINDOW


def test_the_window_exceeds_what_the_api_has_in_flight() -> None:
    # Two gunicorn workers of 16 threads (the benchmark's), each with one command in
    # flight at most, with room to spare (docs/api.md).
    assert W > 2 * 16 * 4


def test_counters_out_of_order_within_the_window_pass_once_each() -> None:
    window = ReplayWindow()
    top = W + 100
    for counter in (top, top - 1, top - W + 1, top - 7, top + 3, top + 2):
        assert window.refusal(counter) is None, counter
        window.add(counter)
    assert window.high_water == top + 3
    for counter in (top, top - 1, top - W + 1, top - 7, top + 3, top + 2):
        reason = window.refusal(counter)
        assert reason is not None
        assert "seen" in reason or "at or below" in reason


def test_a_counter_at_or_below_the_floor_is_refused_even_if_never_seen() -> None:
    window = ReplayWindow()
    window.add(W + 10)
    assert window.floor == 10
    assert window.refusal(11) is None
    for counter in (10, 9, 1):
        reason = window.refusal(counter)
        assert reason is not None
        assert f"counter {counter} is at or below" in reason


def test_a_seen_counter_stays_refused_as_the_mark_rises_past_it() -> None:
    window = ReplayWindow()
    for counter in range(1, 3 * W):  # the seen set is pruned along the way
        window.add(counter)
        # every counter in the window is still seen, the ones below it are refused
        assert all(window.seen(c) for c in range(max(1, counter - W + 1), counter + 1))
        assert all(window.refusal(c) is not None for c in range(1, counter + 1))
        assert window.refusal(counter + 1) is None
    assert not window.seen(5)  # forgotten: the floor refuses it now


def test_a_window_rebuilt_from_its_seen_counters_refuses_the_same() -> None:
    """What the agent does at start: the mark and the seen counters from its database."""
    used = (100, 400, 390, 200, 150)
    window = ReplayWindow()
    for counter in used:
        window.add(counter)
    rebuilt = ReplayWindow(400, [c for c in used if c > 400 - W])  # 100 is not kept
    for counter in range(1, 450):
        assert (window.refusal(counter) is None) == (rebuilt.refusal(counter) is None), counter


@given(st.lists(st.integers(min_value=1, max_value=3 * W), max_size=800))
def test_the_window_matches_a_model_that_remembers_everything(counters: list[int]) -> None:
    """Against a model with no pruning: a counter passes exactly when it is above the
    highest seen minus the window and was never seen; each passes at most once."""
    window = ReplayWindow()
    seen: set[int] = set()
    passed: list[int] = []
    for counter in counters:
        fresh = counter > max(seen, default=0) - W and counter not in seen
        assert (window.refusal(counter) is None) == fresh, counter
        if fresh:
            passed.append(counter)
        window.add(counter)
        seen.add(counter)
        assert window.high_water == max(seen)
    assert len(passed) == len(set(passed))
