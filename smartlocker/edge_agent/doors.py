"""The door monitor: debounced door states, grants, and the alarms they imply.

Pure logic on an injected monotonic time: raw sensor readings go in, effects come
out (:class:`Opened`, :class:`Closed`, :class:`AlarmChange`, :class:`GrantResolved`).
The agent turns effects into events and acks.

* A raw reading becomes the door's state only after it was stable for the
  compartment's debounce time.
* A door that opens while a grant (a pulse for a command or a code) is pending is
  ``granted``; one that opens without a grant raises ``forced_open``.
* A grant whose door does not open within its window raises ``unlock_failed``.
* A door open longer than ``held_open_s`` raises ``held_open``; closing clears it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smartlocker.protocol import AlarmKind

from .config import CompartmentConfig

__all__ = [
    "AlarmChange",
    "Closed",
    "DoorMonitor",
    "Effect",
    "Grant",
    "GrantResolved",
    "Opened",
]


@dataclass(frozen=True, slots=True)
class Grant:
    """Permission for one door opening, given by a pulse."""

    compartment: str
    expires: float
    command_id: str | None = None
    source: str = "command"
    parcel: str | None = None


@dataclass(frozen=True, slots=True)
class Opened:
    compartment: str
    granted: bool
    grants: tuple[Grant, ...] = ()


@dataclass(frozen=True, slots=True)
class Closed:
    compartment: str
    open_seconds: float


@dataclass(frozen=True, slots=True)
class AlarmChange:
    compartment: str
    kind: AlarmKind
    active: bool
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class GrantResolved:
    """A grant ended: its door ``opened`` in time, or not."""

    grant: Grant
    opened: bool


Effect = Opened | Closed | AlarmChange | GrantResolved


@dataclass
class _Door:
    config: CompartmentConfig
    is_open: bool
    raw: bool
    raw_since: float
    opened_at: float | None = None
    grants: list[Grant] = field(default_factory=list)
    forced: bool = False
    held: bool = False


class DoorMonitor:
    """Door states and alarms of every compartment."""

    def __init__(self, compartments: list[CompartmentConfig]) -> None:
        self._configs = {c.id: c for c in compartments}
        self._doors: dict[str, _Door] = {}

    def start(self, compartment: str, is_open: bool, now: float) -> None:
        """The first reading at boot: taken as it is, with no event."""
        door = _Door(self._configs[compartment], is_open, is_open, now)
        if is_open:
            door.opened_at = now
        self._doors[compartment] = door

    def is_open(self, compartment: str) -> bool | None:
        door = self._doors.get(compartment)
        return None if door is None else door.is_open

    def pending_grants(self, compartment: str) -> tuple[Grant, ...]:
        door = self._doors.get(compartment)
        return () if door is None else tuple(door.grants)

    def active_alarms(self, compartment: str) -> set[AlarmKind]:
        door = self._doors[compartment]
        active = set()
        if door.forced:
            active.add(AlarmKind.FORCED_OPEN)
        if door.held:
            active.add(AlarmKind.HELD_OPEN)
        return active

    def grant(self, grant: Grant, now: float) -> list[Effect]:
        """A pulse happened: the next opening of this door is allowed until it expires."""
        door = self._doors[grant.compartment]
        if door.is_open:
            # Already open (it may have been open before the pulse): nothing to wait for.
            return [GrantResolved(grant, opened=True)]
        door.grants.append(grant)
        return []

    def raw(self, compartment: str, is_open: bool, now: float) -> list[Effect]:
        """A raw reading from the sensor (any thread, any number of bounces)."""
        door = self._doors.get(compartment)
        if door is None:
            return []
        if is_open != door.raw:
            door.raw = is_open
            door.raw_since = now
        return self._settle(door, now)

    def tick(self, now: float) -> list[Effect]:
        """Time passed: settle debounced readings, expire grants, check held-open."""
        effects: list[Effect] = []
        for door in self._doors.values():
            effects += self._settle(door, now)
            if not door.is_open:
                effects += self._expire(door, now)
            if (
                door.is_open
                and not door.held
                and door.opened_at is not None
                and now - door.opened_at >= door.config.held_open_s
            ):
                door.held = True
                effects.append(
                    AlarmChange(
                        door.config.id,
                        AlarmKind.HELD_OPEN,
                        True,
                        f"open longer than {door.config.held_open_s:g}s",
                    )
                )
        return effects

    @staticmethod
    def _expire(door: _Door, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for grant in [g for g in door.grants if g.expires <= now]:
            door.grants.remove(grant)
            effects.append(GrantResolved(grant, opened=False))
            effects.append(
                AlarmChange(
                    door.config.id,
                    AlarmKind.UNLOCK_FAILED,
                    True,
                    f"door not opened within {door.config.open_window_s:g}s of the pulse",
                )
            )
        return effects

    def _settle(self, door: _Door, now: float) -> list[Effect]:
        if door.raw == door.is_open:
            return []
        if now - door.raw_since < door.config.debounce_ms / 1000.0:
            return []
        door.is_open = door.raw
        cid = door.config.id
        if door.is_open:
            door.opened_at = now
            out: list[Effect] = self._expire(door, now)
            grants = tuple(door.grants)
            door.grants.clear()
            if grants:
                out.append(Opened(cid, True, grants))
                out += [GrantResolved(g, opened=True) for g in grants]
                return out
            door.forced = True
            return [
                *out,
                Opened(cid, False),
                AlarmChange(cid, AlarmKind.FORCED_OPEN, True, "door opened without a grant"),
            ]
        opened_at = door.opened_at if door.opened_at is not None else now
        door.opened_at = None
        out = [Closed(cid, max(0.0, now - opened_at))]
        if door.held:
            door.held = False
            out.append(AlarmChange(cid, AlarmKind.HELD_OPEN, False, "door closed"))
        if door.forced:
            door.forced = False
            out.append(AlarmChange(cid, AlarmKind.FORCED_OPEN, False, "door closed"))
        return out
