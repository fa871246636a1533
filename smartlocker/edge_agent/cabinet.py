"""The cabinet's state and rules, with no network and no threads of its own.

:class:`Cabinet` owns the hardware, the door monitor, the database, the applied
desired state and the throttle. Everything enters through a method that takes the
one state lock (:attr:`Cabinet.mutex`): MQTT deliveries, kiosk codes, door edges and
ticks of the clock. What must go out is written to the database first and then
announced to the :class:`Outlet` (the MQTT link, or a recorder in tests).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel

from smartlocker import __version__
from smartlocker.protocol import (
    Ack,
    AckOutcome,
    Alarm,
    AlarmKind,
    BootEvent,
    Channel,
    CodeAccepted,
    CodeKind,
    CodeRejected,
    CodeRejectReason,
    CompartmentReport,
    DesiredState,
    DoorClosed,
    DoorOpened,
    DoorState,
    Ed25519PublicKey,
    ProtocolError,
    Receipt,
    Reported,
    ShutdownEvent,
    Telemetry,
    Unlocked,
    UnlockSource,
    decode,
    decode_verified,
    encode,
)

from . import throttle
from .codes import check_code
from .commands import Accepted, Duplicate, Rejected, verify_command
from .config import AgentConfig
from .desired import DesiredView, verify_desired
from .doors import AlarmChange, Closed, DoorMonitor, Effect, Grant, GrantResolved, Opened
from .errors import HardwareError
from .hardware import DoorSensor, Lock
from .sensors import read_temperature
from .store import BOOKKEEPING_MAX_AGE_S, Store

__all__ = ["Cabinet", "Clock", "CodeResult", "DoorEdges", "Outlet", "SystemClock"]

logger = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """Wall-clock time for expiries, monotonic time for durations."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


#: Takes a door edge: compartment, whether it is open, ``clock.monotonic()`` of the edge.
DoorEdges = Callable[[str, bool, float], None]


class Outlet(Protocol):
    """Where the cabinet announces that something waits to be sent."""

    def kick(self) -> None:
        """The database holds something new to send (events, acks, telemetry, reported)."""

    def send_unstored_ack(self, payload: bytes) -> None:
        """Best effort: an ack to a message that was never authentic (not stored)."""


class _NoOutlet:
    def kick(self) -> None:
        pass

    def send_unstored_ack(self, payload: bytes) -> None:
        pass


@dataclass(frozen=True, slots=True)
class _Pulse:
    """An unlock recorded and about to happen: ``pulse_ms`` None if the lock already pulses."""

    lock: Lock
    grant: Grant
    pulse_ms: int | None


@dataclass(frozen=True, slots=True)
class CodeResult:
    """What the kiosk tells the person at the screen."""

    ok: bool
    compartment: str | None = None
    kind: str | None = None
    reason: str | None = None
    attempts: int = 0
    locked_until: datetime | None = None


class Cabinet:
    """One cabinet: hardware, rules and the database, behind one lock."""

    def __init__(
        self,
        config: AgentConfig,
        store: Store,
        *,
        public_key: Ed25519PublicKey,
        pin_factory: Any,
        clock: Clock | None = None,
        outlet: Outlet | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.public_key = public_key
        self.pin_factory = pin_factory
        self.clock: Clock = clock or SystemClock()
        self.outlet: Outlet = outlet or _NoOutlet()
        self.mutex = threading.RLock()
        #: Where door edges go, with the time they happened, instead of being recorded
        #: on gpiozero's thread (the agent queues them for its worker: see
        #: :meth:`door_input`). None: recorded at once, under :attr:`mutex`.
        self.door_edges: DoorEdges | None = None
        self.monitor = DoorMonitor(list(config.compartments))
        self.locks: dict[str, Lock] = {}
        self.sensors: dict[str, DoorSensor] = {}
        self.desired = DesiredView.empty()
        self.reported_dirty = True
        #: The snapshot must go at once (a desired state applied), not when next due.
        self.reported_now = True
        #: The highest ``seq`` published by this process (set by the link).
        self.published_upto = 0
        self._started_at = self.clock.monotonic()
        self._next_telemetry = self._started_at
        self._throttle_reported: dict[str, float] = {}
        self._open = False
        self._batching = 0
        self._kick_pending = False

    # -- life cycle ------------------------------------------------------------

    def open(self) -> None:
        """Take the hardware (every lock de-energised), restore state, record ``boot``."""
        with self.mutex:
            try:
                for comp in self.config.compartments:
                    self.locks[comp.id] = Lock(comp, pin_factory=self.pin_factory)
                for comp in self.config.compartments:
                    self.sensors[comp.id] = DoorSensor(
                        comp, pin_factory=self.pin_factory, on_change=self.door_input
                    )
            except BaseException:
                self._release_hardware()
                raise
            now = self.clock.monotonic()
            for cid, sensor in self.sensors.items():
                self.monitor.start(cid, sensor.is_open, now)
            self._restore_desired()
            for record in self.store.unfinished_commands():
                logger.warning("command %s was interrupted by a restart", record.id)
                self._finish(
                    record.id,
                    record.compartment,
                    AckOutcome.FAILED,
                    "agent restarted before the door was seen",
                )
            self._open = True
            self._emit(BootEvent, agent_version=__version__)

    def close(self, reason: str = "signal") -> None:
        """De-energise every lock, release the pins, record ``shutdown``."""
        with self.mutex:
            if not self._open:
                self._release_hardware()
                return
            self._open = False
            self._release_hardware()
            self._emit(ShutdownEvent, reason=reason[:200])

    def _release_hardware(self) -> None:
        for lock in self.locks.values():
            lock.close()
        for sensor in self.sensors.values():
            sensor.close()
        self.locks.clear()
        self.sensors.clear()

    def _restore_desired(self) -> None:
        saved = self.store.desired()
        if saved is None:
            return
        try:
            state = decode_verified(Channel.DESIRED, saved[1], self.public_key)
        except ProtocolError as exc:
            logger.error("stored desired state no longer verifies (%s); starting empty", exc)
            return
        if isinstance(state, DesiredState) and state.cabinet == self.config.cabinet:
            self.desired = DesiredView.of(state)

    # -- events -------------------------------------------------------------------

    @contextmanager
    def _kicks_held(self) -> Iterator[None]:
        """The link hears of what was committed inside only at the end, once.

        Around an unlock it lets the pulse come first: publishing the ``unlocked``
        event (already committed) takes a while and need not delay the bolt.
        """
        self._batching += 1
        try:
            yield
        finally:
            self._batching -= 1
        if not self._batching and self._kick_pending:
            self._kick_pending = False
            self.outlet.kick()

    @contextmanager
    def _batch(self) -> Iterator[None]:
        """Writes inside commit together (one disk flush); the link hears of them after."""
        with self._kicks_held(), self.store.atomic():
            yield

    def _kick(self) -> None:
        """Tell the link something waits in the database (once it is committed)."""
        if self._batching:
            self._kick_pending = True
        else:
            self.outlet.kick()

    def _emit(self, model: type[BaseModel], **fields: Any) -> BaseModel:
        def build(seq: int) -> tuple[BaseModel, bytes]:
            message = model(cabinet=self.config.cabinet, seq=seq, ts=self.clock.now(), **fields)
            return message, encode(message)

        message = self.store.append_event(build)
        if logger.isEnabledFor(logging.INFO):
            logger.info("event %s", message.model_dump(mode="json", exclude={"v", "cabinet"}))
        self._kick()
        return message

    def _apply(self, effects: list[Effect]) -> None:
        """Record what one input meant: its events and the acks they resolve, in one commit."""
        if not effects:
            return
        with self._batch():
            self._apply_each(effects)

    def _apply_each(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case Opened(compartment=cid, granted=granted):
                    self._emit(DoorOpened, compartment=cid, granted=granted)
                    self.reported_dirty = True
                case Closed(compartment=cid, open_seconds=seconds):
                    self._emit(DoorClosed, compartment=cid, open_seconds=round(seconds, 3))
                    self.reported_dirty = True
                case AlarmChange(compartment=cid, kind=kind, active=active, detail=detail):
                    self._emit(Alarm, compartment=cid, kind=kind, active=active, detail=detail)
                case GrantResolved(grant=grant, opened=opened):
                    if grant.command_id is not None:
                        self._finish(
                            grant.command_id,
                            grant.compartment,
                            AckOutcome.OPENED if opened else AckOutcome.NOT_OPENED,
                            None if opened else "door not opened in time",
                        )

    # -- hardware inputs and time ----------------------------------------------------

    def door_input(self, compartment: str, is_open: bool) -> None:
        """A door sensor edge (gpiozero's thread), stamped with the time it happened.

        Handed to :attr:`door_edges` if set: the agent's worker records it with the
        rest of the cabinet's work, so gpiozero's thread and the worker do not take
        turns at the state lock and the interpreter lock for every edge (each turn a
        context switch). Otherwise recorded here, under :attr:`mutex`.
        """
        at = self.clock.monotonic()
        sink = self.door_edges
        if sink is not None:
            sink(compartment, is_open, at)
            return
        with self.mutex:
            self.record_door(compartment, is_open, at)

    def record_door(self, compartment: str, is_open: bool, at: float) -> None:
        """Record a door edge seen at ``at`` (``clock.monotonic()``); the caller holds
        :attr:`mutex`. Its events and the acks it resolves commit together."""
        if self._open:
            self._apply(self.monitor.raw(compartment, is_open, at))

    def tick(self) -> None:
        """Time passed: debounce, grant windows, held-open, lock watchdog, telemetry."""
        with self.mutex:
            if not self._open:
                return
            now = self.clock.monotonic()
            for lock in self.locks.values():
                lock.watchdog()
            effects: list[Effect] = []
            for cid, sensor in self.sensors.items():
                effects += self.monitor.raw(cid, sensor.is_open, now)
            effects += self.monitor.tick(now)
            self._apply(effects)
            # Acks marked sent go with the next receipt's commit; when none came for
            # BOOKKEEPING_MAX_AGE_S, they are committed alone.
            self.store.flush_bookkeeping(BOOKKEEPING_MAX_AGE_S)
            if now >= self._next_telemetry:
                self._next_telemetry = now + self.config.telemetry_interval_s
                self.store.add_telemetry(encode(self.telemetry()), self.config.telemetry_keep)
                self.outlet.kick()

    # -- unlocking -------------------------------------------------------------------------

    def _unlock(
        self, compartment: str, source: UnlockSource, command_id: str | None, parcel: str | None
    ) -> bool:
        with self._kicks_held():  # `unlocked` is committed alone, announced after the pulse
            plan = self._plan_unlock(compartment, source, command_id, parcel)
            return plan is not None and self._pulse(plan)

    def _plan_unlock(
        self, compartment: str, source: UnlockSource, command_id: str | None, parcel: str | None
    ) -> _Pulse | None:
        """Record ``unlocked`` (before any pulse); None if the compartment has no lock.

        Called inside :meth:`_batch` the event commits with whatever else the caller
        writes there (a command's record); :meth:`_pulse` must follow the commit.
        """
        comp = self.config.compartment(compartment)
        lock = self.locks.get(compartment)
        if comp is None or lock is None:
            return None
        now = self.clock.monotonic()
        grant = Grant(compartment, now + comp.open_window_s, command_id, source.value, parcel)
        if lock.energised:
            logger.info("lock %s is already pulsing; granting without a new pulse", compartment)
            return _Pulse(lock, grant, None)
        pulse_ms = min(comp.pulse_ms, comp.max_pulse_ms)
        self._emit(
            Unlocked,
            compartment=compartment,
            source=source,
            command_id=command_id,
            parcel=parcel,
            pulse_ms=pulse_ms,
        )
        return _Pulse(lock, grant, pulse_ms)

    def _pulse(self, plan: _Pulse) -> bool:
        """Energise the lock (unless it already is) and watch the door for the grant."""
        compartment = plan.grant.compartment
        if plan.pulse_ms is not None:
            try:
                plan.lock.pulse(plan.pulse_ms)
            except HardwareError as exc:
                logger.error("pulse of %s failed: %s", compartment, exc)
                self._emit(
                    Alarm,
                    compartment=compartment,
                    kind=AlarmKind.LOCK_FAULT,
                    active=True,
                    detail=str(exc)[:200],
                )
                return False
        self._apply(self.monitor.grant(plan.grant, self.clock.monotonic()))
        return True

    # -- commands ---------------------------------------------------------------------------

    def _ack(
        self, command_id: str, compartment: str | None, outcome: AckOutcome, reason: str | None
    ) -> bytes:
        ack = Ack(
            ts=self.clock.now(),
            cabinet=self.config.cabinet,
            command_id=command_id,
            compartment=compartment,
            outcome=outcome,
            reason=None if reason is None else reason[:200],
        )
        return encode(ack)

    def _finish(
        self, command_id: str, compartment: str | None, outcome: AckOutcome, reason: str | None
    ) -> None:
        logger.info("command %s: %s%s", command_id, outcome.value, f" ({reason})" if reason else "")
        self.store.finish_command(
            command_id, outcome.value, self._ack(command_id, compartment, outcome, reason)
        )
        self._kick()

    def handle_command(self, payload: bytes, *, retained: bool = False) -> None:
        """One delivery on ``commands``: verify everything, then at most one pulse."""
        with self.mutex:
            if not self._open:
                logger.warning("command ignored: the agent is stopping")
                return
            now = self.clock.now()
            verdict = verify_command(
                payload,
                retained=retained,
                key=self.public_key,
                cabinet=self.config.cabinet,
                now=now,
                skew=timedelta(seconds=self.config.clock_skew_s),
                replay=self.store.replay_window,
                known=self.store.command,
            )
            match verdict:
                case Rejected():
                    self._reject(verdict)
                case Duplicate(record=record):
                    if record.ack is None:
                        logger.info("command %s delivered again while in progress", record.id)
                    else:
                        logger.info("command %s delivered again: stored result re-sent", record.id)
                        self.store.requeue_ack(record.id)
                        self.outlet.kick()
                case Accepted(command=command):
                    self._execute(command.id, command.compartment, command.counter)

    def _reject(self, verdict: Rejected) -> None:
        logger.warning(
            "command %s rejected: %s (%s)", verdict.command_id, verdict.reason, verdict.detail
        )
        if verdict.command_id is None:
            return
        ack = self._ack(
            verdict.command_id, verdict.compartment, AckOutcome.REJECTED, verdict.reason
        )
        if verdict.authentic:
            self.store.record_command(
                verdict.command_id,
                counter=verdict.counter,
                compartment=verdict.compartment,
                outcome=AckOutcome.REJECTED.value,
                ack=ack,
                now=time.time(),
            )
            self.outlet.kick()
        else:
            self.outlet.send_unstored_ack(ack)

    def _execute(self, command_id: str, compartment: str, counter: int) -> None:
        reason = None
        if self.config.compartment(compartment) is None:
            reason = "unknown_compartment"
        elif not self.desired.is_enabled(compartment):
            reason = "disabled"
        if reason is not None:
            self._reject(Rejected(reason, compartment, command_id, compartment, True, counter))
            return
        # Remembered (its counter seen from now on) before the pulse: at most once.
        # The command and its `unlocked` event commit together, before the lock moves;
        # the link hears of them after the pulse.
        with self._kicks_held():
            with self._batch():
                self.store.record_command(
                    command_id,
                    counter=counter,
                    compartment=compartment,
                    outcome=None,
                    ack=None,
                    now=time.time(),
                )
                plan = self._plan_unlock(compartment, UnlockSource.COMMAND, command_id, None)
            if plan is None or not self._pulse(plan):
                self._finish(command_id, compartment, AckOutcome.FAILED, "lock could not be pulsed")

    # -- desired state and receipts ---------------------------------------------------------

    def handle_desired(self, payload: bytes, *, retained: bool = False) -> None:
        with self.mutex:
            try:
                state = verify_desired(
                    payload,
                    key=self.public_key,
                    cabinet=self.config.cabinet,
                    applied_version=self.desired.version,
                )
            except ProtocolError as exc:
                if exc.reason == "already_applied":
                    logger.debug("desired state: %s", exc)
                    self.reported_dirty = self.reported_now = True
                    self.outlet.kick()
                else:
                    logger.warning("desired state refused: %s (%s)", exc.reason, exc)
                return
            self.store.save_desired(state.version, bytes(payload))
            self.desired = DesiredView.of(state)
            # A used code stays used while it is granted; once revoked it can be forgotten.
            self.store.forget_used_codes(set(self.desired.codes))
            logger.info(
                "desired state version %d applied (%d codes)", state.version, len(state.codes)
            )
            self.reported_dirty = self.reported_now = True
            self.outlet.kick()

    def handle_receipt(self, payload: bytes) -> None:
        with self.mutex:
            try:
                receipt = decode(Channel.RECEIPTS, payload)
            except ProtocolError as exc:
                logger.warning("receipt refused: %s (%s)", exc.reason, exc)
                return
            assert isinstance(receipt, Receipt)
            if receipt.cabinet != self.config.cabinet:
                logger.warning("receipt for cabinet %r ignored", receipt.cabinet)
                return
            # Never drop what was not sent yet (a stale or foreign receipt, a wiped database).
            upto = min(receipt.upto_seq, self.published_upto)
            dropped = self.store.receipt(upto)
            logger.debug("receipt up to %d: %d events dropped", upto, dropped)

    # -- kiosk ---------------------------------------------------------------------------------

    def submit_code(self, code: object, kiosk: str | None = None) -> CodeResult:
        """A code typed (or scanned) at a kiosk: open its compartment or say why not."""
        kiosk = kiosk or self.config.kiosk_id
        with self.mutex:
            if not self._open:
                return CodeResult(False, reason="unavailable")
            now = self.clock.now()
            t = now.timestamp()
            record = self.store.throttle(kiosk)
            until = throttle.locked_until(record, t)
            locked: datetime | None
            if until is not None:
                locked = datetime.fromtimestamp(until, UTC)
                if self._throttle_reported.get(kiosk) != until:
                    self._throttle_reported[kiosk] = until
                    self._emit(
                        CodeRejected,
                        kiosk=kiosk,
                        reason=CodeRejectReason.THROTTLED,
                        attempts=record.failures,
                        locked_until=locked,
                    )
                return CodeResult(
                    False, reason="throttled", attempts=record.failures, locked_until=locked
                )
            verdict = check_code(
                code,
                code_key=self.config.code_key_bytes,
                desired=self.desired,
                now=now,
                used=self.store.code_used,
            )
            grant = verdict.grant
            reason = verdict.reason
            if grant is not None and self.config.compartment(grant.compartment) is None:
                grant, reason = None, CodeRejectReason.DISABLED
            if grant is None:
                assert reason is not None
                record = throttle.record_failure(record, t, self.config.throttle)
                self.store.save_throttle(kiosk, record)
                locked = (
                    datetime.fromtimestamp(record.locked_until, UTC)
                    if record.locked_until > t
                    else None
                )
                self._emit(
                    CodeRejected,
                    kiosk=kiosk,
                    reason=reason,
                    attempts=record.failures,
                    locked_until=locked,
                )
                if locked is not None:
                    self._throttle_reported[kiosk] = record.locked_until
                return CodeResult(
                    False, reason=reason.value, attempts=record.failures, locked_until=locked
                )
            assert verdict.code_hash is not None
            self.store.use_code(verdict.code_hash, t)
            if record.failures:
                self.store.save_throttle(kiosk, throttle.record_success(record))
            self._emit(
                CodeAccepted,
                compartment=grant.compartment,
                kind=grant.kind,
                parcel=grant.parcel,
                code_hash=verdict.code_hash,
            )
            source = (
                UnlockSource.PICKUP_CODE
                if grant.kind is CodeKind.PICKUP
                else UnlockSource.DEPOSIT_CODE
            )
            if not self._unlock(grant.compartment, source, None, grant.parcel):
                return CodeResult(False, compartment=grant.compartment, reason="lock_fault")
            return CodeResult(True, compartment=grant.compartment, kind=grant.kind.value)

    # -- what the link sends -----------------------------------------------------------------

    def telemetry(self) -> Telemetry:
        temps: dict[str, float] = {}
        for comp in self.config.compartments:
            if comp.temperature_path is not None:
                value = read_temperature(comp.temperature_path)
                if value is not None:
                    temps[comp.id] = value
        return Telemetry(
            ts=self.clock.now(),
            cabinet=self.config.cabinet,
            uptime_s=round(max(0.0, self.clock.monotonic() - self._started_at), 3),
            outbox_depth=self.store.outbox_depth(),
            cpu_temp_c=read_temperature(self.config.cpu_temp_path),
            compartment_temps=temps,
        )

    def reported(self) -> Reported:
        comps = []
        for comp in self.config.compartments:
            is_open = self.monitor.is_open(comp.id)
            door = (
                DoorState.UNKNOWN
                if is_open is None
                else DoorState.OPEN
                if is_open
                else DoorState.CLOSED
            )
            comps.append(
                CompartmentReport(id=comp.id, door=door, enabled=self.desired.is_enabled(comp.id))
            )
        return Reported(
            ts=self.clock.now(),
            cabinet=self.config.cabinet,
            desired_version=self.desired.version,
            compartments=comps,
            agent_version=__version__,
        )

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` under the state lock (for callers outside this module)."""
        with self.mutex:
            return fn()
