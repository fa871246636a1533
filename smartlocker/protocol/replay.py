"""The replay rule for command counters (pure: the cabinet keeps and persists the state).

The cloud gives each command to a cabinet the cabinet's next counter, but several API
workers and threads publish concurrently, so commands may reach the cabinet out of
counter order. A cabinet therefore accepts a counter above its high-water mark, or one
less than :data:`REPLAY_WINDOW` below it that it has not seen yet; a counter at or
below ``high_water - REPLAY_WINDOW``, or one it has seen, is ``replayed``. The agent
and the fleet simulator both decide with :class:`ReplayWindow`.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["REPLAY_WINDOW", "ReplayWindow"]

#: How far below the high-water mark a counter is still accepted (once). It must exceed
#: the number of commands to one cabinet that can overtake another between the counter's
#: commit and the cabinet: at most one per API request thread, i.e. workers times threads
#: (2 x 8 by default, 2 x 16 in the benchmark). 256 leaves room for a larger deployment
#: while the cabinet remembers at most this many counters. A command that 256 or more
#: later ones overtake (its publication stalled meanwhile) is refused: the safe side.
REPLAY_WINDOW = 256


class ReplayWindow:
    """A cabinet's command counters: the high-water mark and the counters seen in the
    window below it (older ones are forgotten: the mark alone refuses them)."""

    __slots__ = ("_high_water", "_seen")

    def __init__(self, high_water: int = 0, seen: Iterable[int] = ()) -> None:
        self._high_water = high_water
        self._seen: set[int] = set()
        for counter in seen:
            self.add(counter)

    @property
    def high_water(self) -> int:
        """The highest counter seen (0: none yet)."""
        return self._high_water

    @property
    def floor(self) -> int:
        """Counters at or below this are refused without looking them up."""
        return self._high_water - REPLAY_WINDOW

    def refusal(self, counter: int) -> str | None:
        """Why ``counter`` is a replay, or None when the cabinet may accept it."""
        if counter <= self.floor:
            return (
                f"counter {counter} is at or below high-water mark {self._high_water}"
                f" - window {REPLAY_WINDOW}"
            )
        if counter in self._seen:
            return f"counter {counter} was seen already (high-water mark {self._high_water})"
        return None

    def seen(self, counter: int) -> bool:
        """Whether ``counter`` is remembered as seen (never for one at or below the floor)."""
        return counter > self.floor and counter in self._seen

    def add(self, counter: int) -> None:
        """Remember ``counter`` as seen (the cabinet answered its command: accepted, or
        refused after its signature was checked)."""
        if counter > self._high_water:
            self._high_water = counter
            if len(self._seen) >= 2 * REPLAY_WINDOW:  # amortised: at most W stay
                floor = self.floor
                self._seen = {c for c in self._seen if c > floor}
        if counter > self.floor:
            self._seen.add(counter)
