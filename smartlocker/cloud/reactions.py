"""The seam between ingest and the rules: what MQTT traffic means (docs/cloud-internals.md).

Ingest writes the rows, then calls one method of :class:`Reactions` in the same
transaction (a sync psycopg connection) and, after committing, hands the
returned :class:`Effects` to :func:`smartlocker.cloud.downlink.publish_effects`.

Event meanings (events arrive in ``(cabinet, seq)`` order, only new ones):

* ``code_accepted`` or ``unlocked`` (a code's parcel, or the parcel of the command
  that opened it) records a *grant* on the compartment; ``door_opened`` marks it
  used; the ``door_closed`` that follows completes it: a deposit grant moves the
  reserved parcel to ``deposited`` and issues its pickup code (into the
  notification outbox); a pickup grant moves the deposited parcel to
  ``picked_up``; a return grant moves the expired parcel to ``returned``. A pickup
  whose events arrive after the deadline sweep expired the parcel leaves it
  ``expired`` (the contract has no ``expired → picked_up``) with a ``fault`` alert
  on the compartment (:func:`.rules.parcels.record_late_pickup`).
* ``alarm`` raises or clears the alert of the same kind.
* Event times are the cabinet's ``ts``, corrected by its measured clock skew
  while its clock fault is open (:mod:`.rules.clock`), never later than receipt.
* ``door_*`` and ``unlocked`` keep the compartment's door and lock state.

Acks move commands on (``opened`` → succeeded, ``not_opened`` → failed with an
``unlock_failed`` alert, ``failed`` → failed with a ``command_failed`` alert,
``rejected`` → rejected). Status, traffic and silence keep presence; telemetry and
reported also measure the cabinet's clock (a ``fault`` alert while it is wrong). A bad or
unknown reference (cabinet, compartment, parcel) is logged and skipped: nothing
here raises for a cabinet's input.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import psycopg
from psycopg import pq

from smartlocker.protocol import (
    Ack,
    AckOutcome,
    Alarm,
    CodeAccepted,
    DoorClosed,
    DoorOpened,
    Event,
    Reported,
    Status,
    Telemetry,
    Unlocked,
    UnlockSource,
)

from .downlink import expire_commands, prune_desired_states
from .errors import CloudError, InvalidTransition
from .keys import CloudKeys, load_keys
from .rules.alerts import (
    AlertKind,
    clear_alert,
    clear_alerts,
    raise_alert,
)
from .rules.clock import ClockCheck, ClockPolicy, check_clock
from .rules.commands import (
    CommandRow,
    CommandStatus,
    PendingOutcome,
    outcome_status,
    record_outcome,
    send_outcome,
)
from .rules.lifecycle import Transition
from .rules.notifications import send_reminders
from .rules.parcels import (
    expire_overdue,
    record_deposit,
    record_late_pickup,
    record_pickup,
    record_return,
)
from .rules.presence import mark_offline, mark_online, touch, touch_corrected, touch_nowait

__all__ = [
    "Effects",
    "Reactions",
    "configure",
    "on_ack",
    "on_events",
    "on_lane_acks",
    "on_reported",
    "on_silence",
    "on_status",
    "on_telemetry",
    "on_tick",
]

logger = logging.getLogger(__name__)


@dataclass
class Effects:
    """What must happen after the commit (and what happened, for logs and tests)."""

    #: Cabinets whose signed desired state must be republished.
    desired_changed: set[str] = field(default_factory=set)
    #: Parcel transitions made.
    transitions: list[Transition] = field(default_factory=list)
    #: Alert ids newly raised / cleared.
    alerts_raised: list[int] = field(default_factory=list)
    alerts_cleared: list[int] = field(default_factory=list)
    #: Notification outbox rows to deliver (e.g. a new pickup code).
    notifications: list[int] = field(default_factory=list)

    def merge(self, other: Effects) -> Effects:
        self.desired_changed |= other.desired_changed
        self.transitions += other.transitions
        self.alerts_raised += other.alerts_raised
        self.alerts_cleared += other.alerts_cleared
        self.notifications += other.notifications
        return self

    @classmethod
    def combine(cls, items: Iterable[Effects | None]) -> Effects:
        """One :class:`Effects` from several (``None`` entries are skipped)."""
        total = cls()
        for item in items:
            if item is not None:
                total.merge(item)
        return total

    def __bool__(self) -> bool:
        return bool(
            self.desired_changed
            or self.transitions
            or self.alerts_raised
            or self.alerts_cleared
            or self.notifications
        )


_PURPOSE_OF_SOURCE = {
    UnlockSource.DEPOSIT_CODE: "deposit",
    UnlockSource.PICKUP_CODE: "pickup",
}


#: The alerts of its compartment an ack that moves a command to ``succeeded`` clears.
_CLEARED_BY_SUCCESS = (AlertKind.COMMAND_FAILED, AlertKind.UNLOCK_FAILED)

#: The event types that change state here (the rest need no savepoint at all).
_MEANINGFUL = (DoorOpened, DoorClosed, Unlocked, CodeAccepted, Alarm)
#: The ones whose rules may refuse (CloudError): each runs in a savepoint. (A closed
#: door's may refuse only to move its parcel: that part has a savepoint of its own.)
_MAY_REFUSE = (Alarm,)
#: The grants whose door closing moves a parcel.
_PARCEL_GRANTS = frozenset({"deposit", "pickup", "return"})


@contextmanager
def _refusable(conn: psycopg.Connection[Any], what: str) -> Iterator[None]:
    """A savepoint around a rule that may refuse (:class:`CloudError`): refused, it
    leaves nothing behind and ``what`` is logged with the reason; the rest goes on."""
    try:
        with conn.transaction():
            yield
    except CloudError as exc:
        logger.warning("%s: %s", what, exc)


def _opened_by(unlocked: Unlocked, following: Event) -> DoorOpened | None:
    """``following`` if it is the door of ``unlocked``'s compartment opening."""
    if (
        isinstance(following, DoorOpened)
        and following.cabinet == unlocked.cabinet
        and following.compartment == unlocked.compartment
    ):
        return following
    return None


class _Lazy:
    """Pipeline mode, entered and left as a batch of events needs it.

    In pipeline mode a statement whose result is not read at once costs no round
    trip of its own. :meth:`pause` leaves it (one Sync: every queued statement has
    run and its result is in) before what needs more than reading rows in order
    (savepoints, rules that read a row count); :meth:`resume` enters it again.
    Only inside a transaction block the caller already opened (on an autocommit
    connection a pipeline would make its statements one implicit transaction, and
    within a pipeline of the caller's the caller decides).
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._usable = (
            not conn.autocommit
            and conn.pgconn.transaction_status == pq.TransactionStatus.INTRANS
            and conn.pgconn.pipeline_status == pq.PipelineStatus.OFF
        )
        self._open: AbstractContextManager[Any] | None = None

    def resume(self) -> None:
        if self._usable and self._open is None:
            self._open = self._conn.pipeline()
            self._open.__enter__()

    def pause(self) -> None:
        self.__exit__(None, None, None)

    def __enter__(self) -> _Lazy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._open is not None:
            open_, self._open = self._open, None
            open_.__exit__(exc_type, exc, tb)


class Reactions:
    """The rules' reactions to cabinet traffic; build one at start-up with the cloud keys."""

    def __init__(self, keys: CloudKeys, *, clock: ClockPolicy | None = None) -> None:
        self.keys = keys
        self.clock = clock or ClockPolicy()

    # --- events -------------------------------------------------------------------

    def on_events(
        self, conn: psycopg.Connection[Any], events: Sequence[Event], now: datetime
    ) -> Effects:
        """React to new events (in ``(cabinet, seq)`` order).

        The statements go to the server in the order the events ask for them,
        but in pipeline mode (:class:`_Lazy`): a plain state update (door
        opened, unlocked, code accepted) is sent without waiting for it, so it
        travels with the next statement whose result is read (a cabinet's
        ``last_seen`` and clock, a closed door's grant). An unlock followed by its
        door's opening is one statement (:meth:`_unlocked`). What may refuse (an
        alarm, a parcel's move) runs after a sync, out of the pipeline, as before.
        """
        effects = Effects()
        known: dict[str, bool] = {}
        correction: dict[str, timedelta] = {}
        last = len(events) - 1
        opened: DoorOpened | None = None  # already applied with the unlock before it
        with _Lazy(conn) as lazy:
            for i, event in enumerate(events):
                if event is opened:
                    continue
                cabinet = event.cabinet
                if cabinet not in known:
                    lazy.resume()
                    skew = touch_corrected(conn, cabinet, now=now)
                    known[cabinet] = skew is not None
                    if skew is None:
                        logger.warning("events from unknown cabinet %s ignored", cabinet)
                    else:
                        correction[cabinet] = skew
                if not known[cabinet] or not isinstance(event, _MEANINGFUL):
                    continue  # boot, shutdown, code_rejected: stored by ingest, nothing to decide
                at = min(event.ts - correction[cabinet], now)
                if isinstance(event, Unlocked) and i < last:
                    opened = _opened_by(event, events[i + 1])
                    if opened is not None:
                        # The door opened as the lock was energised (the next event):
                        # both in one statement, the state each would have left.
                        lazy.resume()
                        opened_at = min(opened.ts - correction[cabinet], now)
                        self._unlocked(conn, event, at, opened_at)
                        continue
                if not isinstance(event, _MAY_REFUSE):
                    # Plain state updates (door opened or closed, unlocked, code accepted)
                    # raise no rule error: no savepoint (two round trips) around them.
                    lazy.resume()
                    self._on_event(conn, event, at, now, effects, lazy, i == last)
                    continue
                lazy.pause()
                with _refusable(
                    conn, f"event {event.type} seq {event.seq} of {cabinet} not applied"
                ):
                    self._on_event(conn, event, at, now, effects, lazy, i == last)
        return effects

    def _on_event(
        self,
        conn: psycopg.Connection[Any],
        event: Event,
        at: datetime,
        now: datetime,
        effects: Effects,
        lazy: _Lazy,
        last: bool,
    ) -> None:
        if isinstance(event, DoorOpened):
            conn.execute(
                "UPDATE compartments SET door = 'open', door_changed_at = %s,"
                " grant_opened = grant_kind IS NOT NULL WHERE cabinet = %s AND id = %s",
                (at, event.cabinet, event.compartment),
            )
        elif isinstance(event, DoorClosed):
            self._door_closed(conn, event, at, now, effects, lazy, last)
        elif isinstance(event, Unlocked):
            self._unlocked(conn, event, at)
        elif isinstance(event, CodeAccepted):
            self._set_grant(
                conn, event.cabinet, event.compartment, event.kind.value, event.parcel, at
            )
        elif isinstance(event, Alarm):
            self._alarm(conn, event, now, effects)

    def _set_grant(
        self,
        conn: psycopg.Connection[Any],
        cabinet: str,
        compartment: str,
        kind: str,
        parcel: str | None,
        at: datetime,
        *,
        unlocked: bool = False,
        opened_at: datetime | None = None,
    ) -> None:
        if opened_at is None:
            conn.execute(
                "UPDATE compartments SET grant_kind = %s, grant_parcel = %s, grant_at = %s,"
                " grant_opened = false, lock = CASE WHEN %s THEN 'unlocked' ELSE lock END"
                " WHERE cabinet = %s AND id = %s",
                (kind, parcel, at, unlocked, cabinet, compartment),
            )
            return
        # ... and the door opened (see _unlocked): the grant used.
        conn.execute(
            "UPDATE compartments SET grant_kind = %s, grant_parcel = %s, grant_at = %s,"
            " grant_opened = true, lock = CASE WHEN %s THEN 'unlocked' ELSE lock END,"
            " door = 'open', door_changed_at = %s WHERE cabinet = %s AND id = %s",
            (kind, parcel, at, unlocked, opened_at, cabinet, compartment),
        )

    def _unlocked(
        self,
        conn: psycopg.Connection[Any],
        event: Unlocked,
        at: datetime,
        opened_at: datetime | None = None,
    ) -> None:
        """The lock is open, and the grant says why: one statement.

        A command's grant is its purpose and parcel (read in the same statement; an
        unknown command is an operator's opening), a code's its kind and parcel.
        With ``opened_at`` the door opened then (the next event, ``door_opened``),
        applied by the same statement as its own would have: the door open since
        then, the grant used (``grant_kind IS NOT NULL``: a command's or a code's
        grant is never empty).
        """
        if event.source is UnlockSource.COMMAND:
            conn.execute(
                "UPDATE compartments c SET lock = 'unlocked',"
                " grant_kind = coalesce(cmd.purpose, 'operator'), grant_parcel = cmd.parcel,"
                " grant_at = %(at)s, grant_opened = false"
                " FROM (SELECT 1) AS one LEFT JOIN commands cmd"
                " ON cmd.id = %(command)s AND cmd.cabinet = %(cabinet)s"
                " WHERE c.cabinet = %(cabinet)s AND c.id = %(compartment)s"
                if opened_at is None
                else "UPDATE compartments c SET lock = 'unlocked',"
                " grant_kind = coalesce(cmd.purpose, 'operator'), grant_parcel = cmd.parcel,"
                " grant_at = %(at)s, grant_opened = true,"
                " door = 'open', door_changed_at = %(opened)s"
                " FROM (SELECT 1) AS one LEFT JOIN commands cmd"
                " ON cmd.id = %(command)s AND cmd.cabinet = %(cabinet)s"
                " WHERE c.cabinet = %(cabinet)s AND c.id = %(compartment)s",
                {
                    "at": at,
                    "command": event.command_id,
                    "cabinet": event.cabinet,
                    "compartment": event.compartment,
                    **({} if opened_at is None else {"opened": opened_at}),
                },
            )
            return
        kind = _PURPOSE_OF_SOURCE.get(event.source)
        if kind is not None:
            self._set_grant(
                conn,
                event.cabinet,
                event.compartment,
                kind,
                event.parcel,
                at,
                unlocked=True,
                opened_at=opened_at,
            )
            return
        if opened_at is None:
            conn.execute(
                "UPDATE compartments SET lock = 'unlocked' WHERE cabinet = %s AND id = %s",
                (event.cabinet, event.compartment),
            )
            return
        # No grant of its own (an operator's, at the cabinet): the door's opening uses
        # whatever grant the compartment had, as door_opened does.
        conn.execute(
            "UPDATE compartments SET lock = 'unlocked', door = 'open', door_changed_at = %s,"
            " grant_opened = grant_kind IS NOT NULL WHERE cabinet = %s AND id = %s",
            (opened_at, event.cabinet, event.compartment),
        )

    def _door_closed(
        self,
        conn: psycopg.Connection[Any],
        event: DoorClosed,
        at: datetime,
        now: datetime,
        effects: Effects,
        lazy: _Lazy,
        last: bool,
    ) -> None:
        # Closed and locked, the grant gone; what the grant was comes back, and whether
        # the compartment's held-open alert is open (one statement). Nearly always it
        # is not: then its clearing, an UPDATE of no row that still fires the alerts'
        # statement trigger, is not sent at all.
        closing = conn.execute(
            "WITH old AS (SELECT grant_kind, grant_parcel, grant_opened FROM compartments"
            " WHERE cabinet = %(cabinet)s AND id = %(compartment)s FOR NO KEY UPDATE)"
            " UPDATE compartments c SET door = 'closed', lock = 'locked',"
            " door_changed_at = %(at)s, grant_kind = NULL, grant_parcel = NULL,"
            " grant_at = NULL, grant_opened = false FROM old"
            " WHERE c.cabinet = %(cabinet)s AND c.id = %(compartment)s"
            " RETURNING old.grant_kind, old.grant_parcel, old.grant_opened,"
            " EXISTS (SELECT 1 FROM alerts a WHERE a.cabinet = c.cabinet"
            " AND coalesce(a.compartment, '') = c.id AND a.kind = %(held_open)s"
            " AND a.cleared_at IS NULL)",
            {
                "at": at,
                "cabinet": event.cabinet,
                "compartment": event.compartment,
                "held_open": AlertKind.HELD_OPEN.value,
            },
        )
        if last:
            lazy.pause()  # the result comes with the pipeline's Sync, not a round trip more
        row = closing.fetchone()
        if row is None or row[3]:
            cleared = clear_alert(
                conn, event.cabinet, AlertKind.HELD_OPEN, now=now, compartment=event.compartment
            )
            if cleared is not None:
                effects.alerts_cleared.append(cleared)
        if row is None:
            logger.warning(
                "door_closed for unknown compartment %s/%s", event.cabinet, event.compartment
            )
            return
        kind, parcel, opened, _ = row
        if kind not in _PARCEL_GRANTS or parcel is None or not opened:
            return
        # Only the parcel's move may be refused (a rule error): it alone runs in a
        # savepoint, out of the pipeline, so the door's state stays recorded whatever
        # becomes of it.
        lazy.pause()
        with _refusable(
            conn,
            f"event {event.type} seq {event.seq} of {event.cabinet}: parcel {parcel} not moved",
        ):
            self._parcel_door_closed(conn, event, kind, parcel, at, now, effects)

    def _parcel_door_closed(
        self,
        conn: psycopg.Connection[Any],
        event: DoorClosed,
        kind: str,
        parcel: str,
        at: datetime,
        now: datetime,
        effects: Effects,
    ) -> None:
        """The door closed after a parcel's grant: deposited, picked up or returned."""
        placed = conn.execute(
            "SELECT 1 FROM parcels WHERE id = %s AND cabinet = %s AND compartment = %s",
            (parcel, event.cabinet, event.compartment),
        ).fetchone()
        if placed is None:
            logger.warning(
                "grant for parcel %s does not match %s/%s", parcel, event.cabinet, event.compartment
            )
            return
        cause = f"event {event.cabinet}#{event.seq}"
        actor = f"cabinet:{event.cabinet}"
        try:
            if kind == "deposit":
                deposit = record_deposit(conn, self.keys, parcel, now=at, actor=actor, cause=cause)
                effects.transitions.append(deposit.transition)
                if deposit.notification is not None:
                    effects.notifications.append(deposit.notification)
            elif kind == "pickup":
                effects.transitions.append(
                    record_pickup(conn, parcel, now=at, actor=actor, cause=cause)
                )
            else:
                effects.transitions.append(
                    record_return(conn, parcel, now=at, actor=actor, cause=cause)
                )
        except InvalidTransition as exc:
            # The door state above stays recorded; only the parcel does not move.
            logger.warning(
                "%s/%s closed after a %s grant: %s", event.cabinet, event.compartment, kind, exc
            )
            if kind == "pickup":  # expired meanwhile (events late): an operator must look
                alert = record_late_pickup(conn, parcel, at=at, now=now, actor=actor, cause=cause)
                if alert is not None:
                    effects.alerts_raised.append(alert)
            return
        effects.desired_changed.add(event.cabinet)

    def _alarm(
        self, conn: psycopg.Connection[Any], event: Alarm, now: datetime, effects: Effects
    ) -> None:
        if event.active:
            alert, new = raise_alert(
                conn,
                event.cabinet,
                AlertKind(event.kind.value),
                now=now,
                compartment=event.compartment,
                detail=event.detail,
            )
            if new:
                effects.alerts_raised.append(alert)
        else:
            cleared = clear_alert(
                conn,
                event.cabinet,
                AlertKind(event.kind.value),
                now=now,
                compartment=event.compartment,
            )
            if cleared is not None:
                effects.alerts_cleared.append(cleared)

    # --- the rest of the uplink -------------------------------------------------

    def on_ack(self, conn: psycopg.Connection[Any], ack: Ack, now: datetime) -> Effects:
        """Move the command to its outcome; alerts for a door that did not open."""
        effects = Effects()
        touch(conn, ack.cabinet, now=now)
        row = record_outcome(conn, ack.command_id, ack.cabinet, ack.outcome, ack.reason, now=now)
        self._ack_outcome(conn, ack, now, effects, row)
        return effects

    def on_lane_acks(
        self, conn: psycopg.Connection[Any], acks: Sequence[Ack], now: datetime
    ) -> Effects:
        """:meth:`on_ack` for acks on ingest's ack lane, which waits for no event.

        For a connection in pipeline mode, in two round trips where it can. First
        every command's outcome is sent (:func:`.rules.commands.send_outcome`);
        for an ack that means ``succeeded``, the same statement says whether its
        compartment has alerts a success clears (nearly always none). Then the
        results are read, in the acks' order, and what follows from them is done as
        :meth:`on_ack` does it (the alerts' clearing, only where some are open;
        notifications; alerts of failed commands). An ack that means
        ``succeeded`` after one that means ``failed`` of the same cabinet clears
        its alerts without asking, as on the normal path: the failed one's alert,
        raised after the question was sent, may be of its compartment.

        ``last_seen`` goes last and without waiting
        (:func:`.rules.presence.touch_nowait`): the lane's transaction then never
        holds a presence row while it waits for another lock, so it cannot deadlock
        with an events transaction that takes its cabinet's row first and its alerts
        after; and an ack is not held up by such a transaction.
        """
        effects = Effects()
        sent: list[tuple[Ack, PendingOutcome]] = []
        failing: set[str] = set()
        for ack in acks:
            status = outcome_status(ack.outcome)
            ask = status is CommandStatus.SUCCEEDED and ack.cabinet not in failing
            sent.append(
                (
                    ack,
                    send_outcome(
                        conn,
                        ack.command_id,
                        ack.cabinet,
                        ack.outcome,
                        ack.reason,
                        now=now,
                        alerts_open=_CLEARED_BY_SUCCESS if ask else (),
                    ),
                )
            )
            if status is CommandStatus.FAILED:
                failing.add(ack.cabinet)
        for ack, moved in sent:  # the first read waits for all of them
            row, alerts_open = moved.read()
            self._ack_outcome(conn, ack, now, effects, row, clear=alerts_open is not False)
        touch_nowait(conn, [ack.cabinet for ack in acks], now=now)
        return effects

    def _ack_outcome(
        self,
        conn: psycopg.Connection[Any],
        ack: Ack,
        now: datetime,
        effects: Effects,
        row: CommandRow | None,
        *,
        clear: bool = True,
    ) -> None:
        """What the ack's outcome ``row`` means; ``clear``: False when its compartment is
        known to have no alert a success clears."""
        if row is None:
            return
        if row.status is CommandStatus.SUCCEEDED:
            if clear:
                effects.alerts_cleared += clear_alerts(
                    conn, row.cabinet, _CLEARED_BY_SUCCESS, now=now, compartment=row.compartment
                )
        elif row.status is CommandStatus.FAILED:
            kind = (
                AlertKind.UNLOCK_FAILED
                if ack.outcome is AckOutcome.NOT_OPENED
                else AlertKind.COMMAND_FAILED
            )
            alert, new = raise_alert(
                conn,
                row.cabinet,
                kind,
                now=now,
                compartment=row.compartment,
                detail=f"command {row.id}: {ack.outcome.value}"
                + (f" ({ack.reason})" if ack.reason else ""),
            )
            if new:
                effects.alerts_raised.append(alert)
        else:
            logger.warning("command %s rejected by %s: %s", row.id, row.cabinet, ack.reason)

    def on_status(self, conn: psycopg.Connection[Any], status: Status, now: datetime) -> Effects:
        """Birth → online (and republish the desired state); last will → offline."""
        effects = Effects()
        if status.online:
            if mark_online(
                conn, status.cabinet, at=now, now=now, agent_version=status.agent_version
            ):
                effects.desired_changed.add(status.cabinet)
        elif mark_offline(conn, status.cabinet, at=now, now=now, why="last will"):
            effects.alerts_raised.extend(self._open_alert(conn, status.cabinet, AlertKind.OFFLINE))
        return effects

    def on_reported(
        self, conn: psycopg.Connection[Any], reported: Reported, now: datetime
    ) -> Effects:
        """Record the applied desired version and the doors' snapshot."""
        if not touch(conn, reported.cabinet, now=now):
            logger.warning("reported from unknown cabinet %s ignored", reported.cabinet)
            return Effects()
        effects = Effects()
        self._check_clock(conn, reported.cabinet, reported.ts, now, effects)
        conn.execute(
            "UPDATE cabinets SET reported_version = %s, reported_at = %s,"
            " agent_version = coalesce(%s, agent_version) WHERE id = %s",
            (
                reported.desired_version,
                min(reported.ts, now),
                reported.agent_version,
                reported.cabinet,
            ),
        )
        if reported.compartments:
            # One statement for the whole snapshot; rows whose door is already right
            # are left alone (no new row version for them).
            conn.execute(
                "UPDATE compartments c SET door = r.door"
                " FROM unnest(%s::text[], %s::text[]) AS r(id, door)"
                " WHERE c.cabinet = %s AND c.id = r.id AND c.door IS DISTINCT FROM r.door",
                (
                    [comp.id for comp in reported.compartments],
                    [comp.door.value for comp in reported.compartments],
                    reported.cabinet,
                ),
            )
        return effects

    def on_telemetry(
        self, conn: psycopg.Connection[Any], readings: Sequence[Telemetry], now: datetime
    ) -> Effects:
        """Last seen; compartment temperatures against their ranges."""
        effects = Effects()
        newest: dict[str, datetime] = {}
        for reading in readings:
            at = min(reading.ts, now)
            if not touch(conn, reading.cabinet, now=now):
                continue
            newest[reading.cabinet] = max(reading.ts, newest.get(reading.cabinet, reading.ts))
            for compartment, celsius in reading.compartment_temps.items():
                row = conn.execute(
                    "UPDATE compartments SET temperature_c = %s, temperature_at = %s"
                    " WHERE cabinet = %s AND id = %s RETURNING temp_min_c, temp_max_c",
                    (celsius, at, reading.cabinet, compartment),
                ).fetchone()
                if row is None:
                    continue
                low, high = row
                if (low is not None and celsius < low) or (high is not None and celsius > high):
                    alert, new = raise_alert(
                        conn,
                        reading.cabinet,
                        AlertKind.TEMPERATURE,
                        now=now,
                        compartment=compartment,
                        detail=f"{celsius:.1f} °C outside {low}..{high}",
                    )
                    if new:
                        effects.alerts_raised.append(alert)
                else:
                    cleared = clear_alert(
                        conn,
                        reading.cabinet,
                        AlertKind.TEMPERATURE,
                        now=now,
                        compartment=compartment,
                    )
                    if cleared is not None:
                        effects.alerts_cleared.append(cleared)
        # The newest reading of the batch: the least delayed, the best measure.
        for cabinet, sent in sorted(newest.items()):
            self._check_clock(conn, cabinet, sent, now, effects)
        return effects

    def _check_clock(
        self,
        conn: psycopg.Connection[Any],
        cabinet: str,
        sent: datetime,
        now: datetime,
        effects: Effects,
    ) -> ClockCheck | None:
        check = check_clock(conn, cabinet, sent=sent, now=now, policy=self.clock)
        if check is not None:
            if check.raised is not None:
                effects.alerts_raised.append(check.raised)
            if check.cleared is not None:
                effects.alerts_cleared.append(check.cleared)
        return check

    def on_silence(
        self, conn: psycopg.Connection[Any], cabinet: str, last_seen: datetime, now: datetime
    ) -> Effects:
        """Heartbeats stopped (ingest decides when): offline, with an alert."""
        effects = Effects()
        if mark_offline(
            conn, cabinet, at=now, now=now, why=f"silent since {last_seen.isoformat()}"
        ):
            effects.alerts_raised.extend(self._open_alert(conn, cabinet, AlertKind.OFFLINE))
        return effects

    def on_tick(self, conn: psycopg.Connection[Any], now: datetime) -> Effects:
        """Periodic sweep (ingest's timer, e.g. every few seconds): deadlines and expiries.

        Deposited parcels past their deadline → expired (pickup code revoked);
        recipients whose deadline is near are reminded;
        commands past their expiry → timed_out (with a ``command_failed`` alert);
        old desired-state versions pruned (the newest 20 per cabinet stay).
        """
        effects = Effects()
        for transition in expire_overdue(conn, now):
            effects.transitions.append(transition)
            effects.desired_changed.add(transition.cabinet)
        prune_desired_states(conn)
        send_reminders(conn, now)
        for command in expire_commands(conn, now):
            alert = self._open_alert(
                conn, command.cabinet, AlertKind.COMMAND_FAILED, command.compartment
            )
            effects.alerts_raised.extend(alert)
        return effects

    @staticmethod
    def _open_alert(
        conn: psycopg.Connection[Any],
        cabinet: str,
        kind: AlertKind,
        compartment: str | None = None,
    ) -> list[int]:
        row = conn.execute(
            "SELECT id FROM alerts WHERE cabinet = %s AND kind = %s"
            " AND coalesce(compartment, '') = coalesce(%s, '') AND cleared_at IS NULL",
            (cabinet, kind.value, compartment),
        ).fetchone()
        return [int(row[0])] if row else []


# --- the module as the seam object ------------------------------------------------------
#
# docs/cloud-internals.md names module-level functions; ingest may pass this module
# itself as its rules object. They delegate to one Reactions, set by configure() at
# start-up or, failing that, built on first use from SMARTLOCKER_SIGNING_KEY.

_default: Reactions | None = None
_default_lock = threading.Lock()


def configure(keys: CloudKeys, *, clock: ClockPolicy | None = None) -> Reactions:
    """Set the keys (and clock policy) the module-level functions use (once at start-up)."""
    global _default
    with _default_lock:
        _default = Reactions(keys, clock=clock)
        return _default


def _rules() -> Reactions:
    global _default
    with _default_lock:
        if _default is None:
            _default = Reactions(load_keys())
        return _default


def on_events(conn: psycopg.Connection[Any], events: Sequence[Event], now: datetime) -> Effects:
    return _rules().on_events(conn, events, now)


def on_ack(conn: psycopg.Connection[Any], ack: Ack, now: datetime) -> Effects:
    return _rules().on_ack(conn, ack, now)


def on_lane_acks(conn: psycopg.Connection[Any], acks: Sequence[Ack], now: datetime) -> Effects:
    return _rules().on_lane_acks(conn, acks, now)


def on_status(conn: psycopg.Connection[Any], status: Status, now: datetime) -> Effects:
    return _rules().on_status(conn, status, now)


def on_reported(conn: psycopg.Connection[Any], reported: Reported, now: datetime) -> Effects:
    return _rules().on_reported(conn, reported, now)


def on_telemetry(
    conn: psycopg.Connection[Any], readings: Sequence[Telemetry], now: datetime
) -> Effects:
    return _rules().on_telemetry(conn, readings, now)


def on_silence(
    conn: psycopg.Connection[Any], cabinet: str, last_seen: datetime, now: datetime
) -> Effects:
    return _rules().on_silence(conn, cabinet, last_seen, now)


def on_tick(conn: psycopg.Connection[Any], now: datetime) -> Effects:
    return _rules().on_tick(conn, now)
