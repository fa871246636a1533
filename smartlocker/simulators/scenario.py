"""Couriers and recipients at work over a compressed day, through the REST API and kiosks.

People act the way real ones do: couriers reserve and deposit (with the kiosk's
deposit code or through the API), recipients read their code from a message and
pick up (at the kiosk or through the app), some come late, some forget, some type
wrong codes first; couriers take expired parcels back. Every action is one call
of the real API or a real kiosk; the world around the doors is the virtual
cabinets'. :meth:`Scenario.run` ends with a :class:`Summary`.

Faults (:class:`PowerCut`, :class:`SlowClock`) are injected on a schedule through a
:class:`FaultInjector` (the :class:`~.stack.Stack`). During each, an operator asks
for a remote opening of the faulty cabinet (the probe) and the summary reports how
it ended and which alerts the cabinet raised: a fault must show up as its alarm or
command failure, and any other alert is unexplained. People who find a cabinet
dark come back once it is powered again; people whose remote opening a cabinet
refuses because of its clock come back once it is right.
"""

from __future__ import annotations

import heapq
import json
import logging
import random
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from .api_client import ApiClient, ApiProblem
from .inbox import CodeInbox

__all__ = [
    "FaultInjector",
    "FaultReport",
    "PowerCut",
    "Scenario",
    "ScenarioConfig",
    "SlowClock",
    "Summary",
]

logger = logging.getLogger(__name__)

FINAL_STATES = ("picked_up", "returned", "cancelled")
#: Actions that need the cabinet itself (its kiosk, or a remote opening).
_AT_THE_CABINET = frozenset({"deposit", "pickup", "collect_expired"})
SIZES = ("s", "m", "l")


@dataclass(frozen=True)
class PowerCut:
    """``cabinet``'s agent killed ``at_s`` real seconds into the run, powered ``for_s`` later.

    Longer than a command's lifetime (30 s), so that the probe issued meanwhile expires.
    """

    cabinet: str
    at_s: float = 2.0
    for_s: float = 40.0
    #: What it must show: the cabinet offline, and the probe timed out.
    expected_alerts: frozenset[str] = frozenset({"offline", "command_failed"})


@dataclass(frozen=True)
class SlowClock:
    """``cabinet``'s wall clock ``offset_s`` off (negative: behind) for ``for_s`` seconds."""

    cabinet: str
    at_s: float = 2.0
    for_s: float = 30.0
    #: Beyond the agent's tolerance (``clock_skew_s``, 30 s): commands are refused.
    offset_s: float = -90.0
    expected_alerts: frozenset[str] = frozenset({"fault"})


class FaultInjector(Protocol):
    """Where faults are injected (the :class:`~.stack.Stack`), by cabinet name."""

    def power_cut(self, name: str) -> None: ...

    def power_on(self, name: str) -> None: ...

    def set_clock(self, name: str, offset_s: float) -> None: ...


@dataclass(frozen=True)
class ScenarioConfig:
    site: str
    #: Real seconds one simulated day lasts.
    day_s: float = 120.0
    days: float = 1.0
    parcels_per_day: int = 30
    #: Deadline after deposit, in simulated days.
    hold_days: float = 1.0
    p_forget: float = 0.1
    p_late: float = 0.15
    p_wrong_code: float = 0.2
    p_app_pickup: float = 0.3
    p_kiosk_deposit: float = 0.5
    #: Seconds to wait at the end for parcels to settle.
    settle_s: float = 30.0
    seed: int = 1
    #: Faults injected while people are at work (need a :class:`FaultInjector`).
    power_cuts: tuple[PowerCut, ...] = ()
    slow_clocks: tuple[SlowClock, ...] = ()


@dataclass
class _Parcel:
    reference: str
    size: str
    forget: bool
    late: bool
    wrong_codes: int
    app_pickup: bool
    kiosk_deposit: bool
    id: str | None = None
    cabinet: str | None = None
    deposit_code: str | None = None
    pickup_scheduled: bool = False
    return_scheduled: bool = False
    #: Came back later because of a fault (a dark cabinet, a refused opening).
    deferred: int = 0


@dataclass
class FaultReport:
    """One injected fault and what the system showed of it."""

    kind: str
    cabinet: str
    expected_alerts: frozenset[str]
    #: The probe: a remote opening asked for during the fault, and how it ended.
    probe: str | None = None
    probe_status: str | None = None
    probe_reason: str | None = None
    #: Alert kinds the cabinet raised (at the end of the run).
    alerts: set[str] = field(default_factory=set)
    started: float | None = None
    ended: float | None = None

    @property
    def shown(self) -> bool:
        """Each expected alert raised, and the probe failed (never a pulse)."""
        failed = self.probe_status in ("failed", "rejected", "timed_out")
        return self.expected_alerts <= self.alerts and failed

    def line(self) -> str:
        return (
            f"{self.kind} on {self.cabinet}: alerts {', '.join(sorted(self.alerts)) or 'none'};"
            f" probe {self.probe_status} ({self.probe_reason or '-'})"
            + ("" if self.shown else " NOT SHOWN")
        )


@dataclass
class Summary:
    parcels: Counter[str] = field(default_factory=Counter)
    no_compartment: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)
    command_latency_ms: list[float] = field(default_factory=list)
    messages: Counter[str] = field(default_factory=Counter)
    events_produced: int | None = None
    events_stored: int | None = None
    #: Parcels whose state does not match what their people did (should be empty).
    unexpected: list[str] = field(default_factory=list)
    faults: list[FaultReport] = field(default_factory=list)
    #: Actions put off because of a fault (people came back later).
    deferred: Counter[str] = field(default_factory=Counter)
    #: Alerts that no injected fault explains (should be empty): "cabinet kind".
    unexplained_alerts: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float | None:
        data = sorted(self.command_latency_ms)
        if not data:
            return None
        return data[min(len(data) - 1, int(q * len(data)))]

    def lines(self) -> list[str]:
        out = [
            "parcels: " + ", ".join(f"{k} {v}" for k, v in sorted(self.parcels.items())),
            f"no compartment free: {self.no_compartment}",
            "actions: " + ", ".join(f"{k} {v}" for k, v in sorted(self.actions.items())),
            "alerts: " + (", ".join(f"{k} {v}" for k, v in sorted(self.alerts.items())) or "none"),
            "messages received: " + ", ".join(f"{k} {v}" for k, v in sorted(self.messages.items())),
        ]
        if self.command_latency_ms:
            p50, p99 = self.percentile(0.5), self.percentile(0.99)
            mean = statistics.fmean(self.command_latency_ms)
            out.append(
                f"command round trips (HTTP → cabinet → ack): {len(self.command_latency_ms)},"
                f" p50 {p50:.0f} ms, p99 {p99:.0f} ms, mean {mean:.0f} ms"
            )
        if self.unexpected:
            out.append("parcels in an unexpected state: " + ", ".join(self.unexpected))
        out += ["fault: " + f.line() for f in self.faults]
        if self.deferred:
            out.append(
                "put off by faults: " + ", ".join(f"{k} {v}" for k, v in self.deferred.items())
            )
        if self.unexplained_alerts:
            out.append("unexplained alerts: " + ", ".join(self.unexplained_alerts))
        if self.failures:
            out.append("failed actions: " + ", ".join(f"{k} {v}" for k, v in self.failures.items()))
        if self.events_produced is not None:
            out.append(
                f"events produced {self.events_produced}, in the database {self.events_stored}"
            )
        return out


class Scenario:
    """Runs people's actions on a schedule; thread-safe, bounded in time."""

    def __init__(
        self,
        config: ScenarioConfig,
        api: ApiClient,
        kiosks: dict[str, str],
        inbox: CodeInbox,
        *,
        on_progress: Callable[[str], None] | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        if (config.power_cuts or config.slow_clocks) and faults is None:
            raise ValueError("faults are configured but there is nothing to inject them with")
        self.config = config
        self.injector = faults
        self.api = api
        self.kiosks = kiosks
        self.inbox = inbox
        self.rng = random.Random(config.seed)
        self.summary = Summary()
        self.on_progress = on_progress or (lambda line: logger.info("%s", line))
        self._heap: list[tuple[float, int, str, _Parcel]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._parcels: list[_Parcel] = []
        self._running = 0  # actions being carried out (they may schedule more)
        self._stop = threading.Event()
        #: (time, seq, what) of fault starts and ends.
        self._timeline: list[tuple[float, int, Callable[[], None]]] = []
        #: Cabinet → when its fault ends (monotonic): dark, or refusing remote openings.
        self._dark: dict[str, float] = {}
        self._skewed: dict[str, float] = {}
        self._done = False

    # --- the plan ---------------------------------------------------------------------------

    def _plan(self, start: float) -> None:
        c = self.config
        total = max(1, round(c.parcels_per_day * c.days))
        for i in range(total):
            parcel = _Parcel(
                reference=f"DEMO-{c.seed}-{i + 1:04d}",
                size=self.rng.choice(SIZES),
                forget=self.rng.random() < c.p_forget,
                late=self.rng.random() < c.p_late,
                wrong_codes=self.rng.choice((1, 2)) if self.rng.random() < c.p_wrong_code else 0,
                app_pickup=self.rng.random() < c.p_app_pickup,
                kiosk_deposit=self.rng.random() < c.p_kiosk_deposit,
            )
            self._parcels.append(parcel)
            at = start + self.rng.uniform(0, c.days * c.day_s * 0.6)
            self._schedule(at, "reserve", parcel)
        for cut in c.power_cuts:
            report = FaultReport("power_cut", cut.cabinet, cut.expected_alerts)
            self.summary.faults.append(report)
            self._at(start + cut.at_s, partial(self._power_cut, report, cut))
            self._at(start + cut.at_s + cut.for_s, partial(self._power_on, report))
        for slow in c.slow_clocks:
            report = FaultReport("slow_clock", slow.cabinet, slow.expected_alerts)
            self.summary.faults.append(report)
            self._at(start + slow.at_s, partial(self._clock_wrong, report, slow))
            self._at(start + slow.at_s + slow.for_s, partial(self._clock_right, report))

    def _at(self, at: float, what: Callable[[], None]) -> None:
        with self._lock:
            self._seq += 1
            heapq.heappush(self._timeline, (at, self._seq, what))

    def _schedule(self, at: float, action: str, parcel: _Parcel) -> None:
        with self._lock:
            self._seq += 1
            heapq.heappush(self._heap, (at, self._seq, action, parcel))

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> Summary:
        start = time.monotonic()
        self._plan(start)
        end = start + self.config.days * self.config.day_s
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="person") as people:
            while not self._stop.is_set():
                now = time.monotonic()
                with self._lock:
                    fault_due = self._timeline and self._timeline[0][0] <= now
                    fault = heapq.heappop(self._timeline)[2] if fault_due else None
                    due = fault is None and self._heap and self._heap[0][0] <= now
                    item = heapq.heappop(self._heap) if due else None
                if fault is not None:
                    with self._lock:
                        self._running += 1
                    people.submit(self._fault, fault)
                    continue
                if item is not None:
                    with self._lock:
                        self._running += 1
                    people.submit(self._act, item[2], item[3])
                    continue
                if now > end and self._settled():
                    self._done = True  # every planned action was carried out
                    break
                if now > end + self.config.settle_s:
                    break
                self._stop.wait(0.05)
        self._collect()
        return self.summary

    def _settled(self) -> bool:
        with self._lock:
            return not self._heap and not self._timeline and self._running == 0

    # --- faults ---------------------------------------------------------------------------------

    def _fault(self, what: Callable[[], None]) -> None:
        try:
            what()
        except Exception:
            with self._lock:
                self.summary.failures["fault injection: crashed"] += 1
            logger.exception("fault injection failed")
        finally:
            with self._lock:
                self._running -= 1

    def _power_cut(self, report: FaultReport, cut: PowerCut) -> None:
        assert self.injector is not None
        with self._lock:
            self._dark[cut.cabinet] = float("inf")  # until it has booted again
        self.injector.power_cut(cut.cabinet)
        report.started = time.monotonic()
        self.on_progress(f"power cut: {cut.cabinet} is dark for {cut.for_s:.0f} s")
        time.sleep(1.0)
        self._probe(report, "operator opening during a power cut")

    def _power_on(self, report: FaultReport) -> None:
        assert self.injector is not None
        self.injector.power_on(report.cabinet)
        report.ended = time.monotonic()
        with self._lock:
            self._dark[report.cabinet] = time.monotonic() + 2.0  # its link comes up
        self.on_progress(f"power back: {report.cabinet} booted")

    def _clock_wrong(self, report: FaultReport, slow: SlowClock) -> None:
        assert self.injector is not None
        with self._lock:
            self._skewed[slow.cabinet] = float("inf")
        self.injector.set_clock(slow.cabinet, slow.offset_s)
        report.started = time.monotonic()
        self.on_progress(f"slow clock: {slow.cabinet} runs {slow.offset_s:+.0f} s off")
        time.sleep(1.0)
        self._probe(report, "operator opening with a wrong clock")

    def _clock_right(self, report: FaultReport) -> None:
        assert self.injector is not None
        self.injector.set_clock(report.cabinet, 0.0)
        report.ended = time.monotonic()
        with self._lock:
            self._skewed[report.cabinet] = time.monotonic() + 1.0
        self.on_progress(f"clock right again: {report.cabinet}")

    def _probe(self, report: FaultReport, reason: str) -> None:
        """An operator asks for a remote opening of the faulty cabinet (it must fail)."""
        cabinet = self.api.get(f"/api/v1/cabinets/{report.cabinet}")
        compartment = cabinet["compartments"][0]["id"]
        command = self.api.post(
            f"/api/v1/cabinets/{report.cabinet}/compartments/{compartment}/unlock",
            {"reason": reason},
        )
        report.probe = command["id"]

    def _fault_until(self, cabinet: str | None, faults: dict[str, float]) -> float | None:
        """When the fault of ``cabinet`` in ``faults`` ends, if it is on now."""
        if cabinet is None:
            return None
        with self._lock:
            until = faults.get(cabinet)
        return until if until is not None and time.monotonic() < until else None

    def _defer(self, action: str, parcel: _Parcel, until: float) -> None:
        """The person comes back once the fault is over (``inf``: check again soon)."""
        with self._lock:
            self.summary.deferred[action] += 1
        parcel.deferred += 1
        parcel.wrong_codes = 0  # they typed the wrong ones already, or know better now
        back = min(until, time.monotonic() + 5.0) + self.rng.uniform(0.2, 1.0)
        self._schedule(back, action, parcel)

    # --- people -------------------------------------------------------------------------------

    def _act(self, action: str, parcel: _Parcel) -> None:
        try:
            self._attempt(action, parcel)
        finally:
            with self._lock:
                self._running -= 1

    def _attempt(self, action: str, parcel: _Parcel) -> None:
        if action in _AT_THE_CABINET:
            dark = self._fault_until(parcel.cabinet, self._dark)
            if dark is not None:  # the screen is dark, the app says offline
                self._defer(action, parcel, dark)
                return
        try:
            getattr(self, f"_{action}")(parcel)
            with self._lock:
                self.summary.actions[action] += 1
        except Exception as exc:
            if self._put_off(action, parcel, exc):
                return
            if not isinstance(exc, ApiProblem):
                with self._lock:
                    self.summary.failures[f"{action}: crashed"] += 1
                logger.exception("%s of %s crashed", action, parcel.reference)
                return
            with self._lock:
                self.summary.failures[f"{action}: {exc.slug}"] += 1
            logger.warning("%s of %s failed: %s", action, parcel.reference, exc)

    def _put_off(self, action: str, parcel: _Parcel, exc: Exception) -> bool:
        """A failure a fault explains: the person comes back after it (True)."""
        if action not in _AT_THE_CABINET:
            return False
        dark = self._fault_until(parcel.cabinet, self._dark)
        if dark is not None:  # the power went while they were at it
            logger.info("%s of %s cut short by a power cut: %s", action, parcel.reference, exc)
            self._defer(action, parcel, dark)
            return True
        skewed = self._fault_until(parcel.cabinet, self._skewed)
        if skewed is not None and isinstance(exc, ApiProblem) and exc.slug == "command-rejected":
            logger.info("%s of %s refused by a wrong clock: %s", action, parcel.reference, exc)
            self._defer(action, parcel, skewed)
            return True
        return False

    def _day(self, days: float) -> float:
        return days * self.config.day_s

    def _reserve(self, parcel: _Parcel) -> None:
        # The holding time counts from the deposit, a little after the reservation.
        deadline = datetime.now(UTC) + timedelta(
            seconds=self._day(self.config.hold_days) + self._day(0.3)
        )
        try:
            reserved = self.api.post(
                "/api/v1/parcels",
                {
                    "site": self.config.site,
                    "size": parcel.size,
                    "reference": parcel.reference,
                    "recipient": f"+49151{self.rng.randrange(10**7):07d}",
                    "notify_channel": "sms",
                    "locale": self.rng.choice(("en", "de", "fr")),
                    "deadline": deadline.isoformat(),
                },
            )
        except ApiProblem as exc:
            if exc.status == 409:
                with self._lock:
                    self.summary.no_compartment += 1
                return
            raise
        parcel.id = reserved["id"]
        parcel.cabinet = reserved["cabinet"]
        parcel.deposit_code = reserved["deposit_code"]
        self.on_progress(
            f"reserved {parcel.reference} in {parcel.cabinet}/"
            f"{reserved['compartment']} ({parcel.size})"
        )
        self._schedule(time.monotonic() + self._day(0.02), "deposit", parcel)

    def _deposit(self, parcel: _Parcel) -> None:
        assert parcel.id is not None
        if parcel.deferred:
            self._extend(parcel)
        # A courier held up by a fault may find the kiosk code run out: they use the app.
        if parcel.kiosk_deposit and parcel.cabinet in self.kiosks and not parcel.deferred:
            self._kiosk(parcel.cabinet, parcel.deposit_code or "")
        else:
            self._command(f"/api/v1/parcels/{parcel.id}/deposit")
        self.on_progress(f"deposited {parcel.reference}")
        self._schedule(time.monotonic() + 1.0, "await_code", parcel)

    def _await_code(self, parcel: _Parcel) -> None:
        """The recipient checks their phone; once the code is there they plan a visit."""
        assert parcel.id is not None
        if self.inbox.code_for(parcel.id) is None:
            self._schedule(time.monotonic() + 0.5, "await_code", parcel)
            return
        if parcel.forget:
            parcel.return_scheduled = True
            self._schedule(
                time.monotonic() + self._day(self.config.hold_days) + self._day(0.15),
                "collect_expired",
                parcel,
            )
            return
        wait = self._day(
            self.config.hold_days * (0.8 if parcel.late else self.rng.uniform(0.05, 0.4))
        )
        parcel.pickup_scheduled = True
        self._schedule(time.monotonic() + wait, "pickup", parcel)

    def _extend(self, parcel: _Parcel) -> None:
        """The operator gives a parcel held up by a fault its holding time again."""
        assert parcel.id is not None
        current = self.api.get(f"/api/v1/parcels/{parcel.id}")["deadline"]
        wanted = datetime.now(UTC) + timedelta(
            seconds=self._day(self.config.hold_days) + self._day(0.3)
        )
        if current is None or wanted > datetime.fromisoformat(current):
            self.api.post(f"/api/v1/parcels/{parcel.id}/extend", {"deadline": wanted.isoformat()})

    def _pickup(self, parcel: _Parcel) -> None:
        assert parcel.id is not None
        assert parcel.cabinet is not None
        if parcel.deferred and not parcel.forget:
            self._extend(parcel)
        code = self.inbox.code_for(parcel.id)
        assert code is not None
        for _ in range(parcel.wrong_codes):
            wrong = f"{(int(code) + self.rng.randrange(1, 10**6)) % 10 ** len(code):0{len(code)}d}"
            if parcel.cabinet in self.kiosks:
                result = self._kiosk(parcel.cabinet, wrong, expect_ok=False)
                assert not result["ok"], "a wrong code opened a door"
        if parcel.app_pickup or parcel.cabinet not in self.kiosks:
            self._command(f"/api/v1/parcels/{parcel.id}/pickup", {"code": code})
        else:
            self._kiosk(parcel.cabinet, code)
        self.on_progress(f"picked up {parcel.reference}")

    def _collect_expired(self, parcel: _Parcel) -> None:
        """A courier takes an expired parcel back (once the cloud says it expired)."""
        assert parcel.id is not None
        state = self.api.get(f"/api/v1/parcels/{parcel.id}")["state"]
        if state == "deposited":
            self._schedule(time.monotonic() + 1.0, "collect_expired", parcel)
            return
        if state == "expired":
            self._command(f"/api/v1/parcels/{parcel.id}/return")
            self.on_progress(f"returned {parcel.reference} (not collected)")

    def _command(self, path: str, body: Any = None) -> None:
        started = time.monotonic()
        command = self.api.post(path, body, wait=10)
        elapsed = (time.monotonic() - started) * 1000
        with self._lock:
            self.summary.command_latency_ms.append(elapsed)
        if command.get("status") != "succeeded":
            raise ApiProblem(
                200, f"command-{command.get('status')}", str(command.get("outcome_reason"))
            )

    def _kiosk(self, cabinet: str, code: str, *, expect_ok: bool = True) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - a local kiosk URL
            self.kiosks[cabinet] + "/kiosk/code",
            data=json.dumps({"code": code}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                result: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            result = json.loads(exc.read() or b"{}")
            exc.close()
        if expect_ok and not result.get("ok"):
            raise ApiProblem(
                403, f"kiosk-{result.get('reason')}", f"kiosk refused a code: {result}"
            )
        return result

    # --- the end ------------------------------------------------------------------------------

    def _collect(self, patience_s: float = 15.0) -> None:
        """The end state, once the last doors have closed and their events are in."""
        deadline = time.monotonic() + patience_s
        while True:
            parcels = self.api.paginate("/api/v1/parcels", site=self.config.site, limit=200)
            unexpected = self._unexpected(parcels)
            if not unexpected or time.monotonic() > deadline or self._stop.is_set():
                break
            time.sleep(0.5)
        mine = {p.id for p in self._parcels}
        self.summary.parcels = Counter(p["state"] for p in parcels if p["id"] in mine)
        self.summary.unexpected = unexpected
        alerts = self.api.paginate("/api/v1/alerts", site=self.config.site, limit=200)
        self.summary.alerts = Counter(a["kind"] for a in alerts)
        self.summary.messages = Counter(self.inbox.kinds)
        self._judge_faults(alerts)

    def _judge_faults(self, alerts: list[dict[str, Any]]) -> None:
        """Each fault's alerts and probe; alerts that no fault explains."""
        explained: set[tuple[str, str]] = set()
        for report in self.summary.faults:
            report.alerts = {a["kind"] for a in alerts if a["cabinet"] == report.cabinet}
            explained |= {(report.cabinet, kind) for kind in report.expected_alerts}
            if report.probe is not None:
                command = self._final_command(report.probe)
                report.probe_status = command.get("status")
                report.probe_reason = command.get("outcome_reason") or command.get("outcome")
        self.summary.unexplained_alerts = [
            f"{a['cabinet']} {a['kind']} ({a.get('detail')})"
            for a in alerts
            if (a["cabinet"], a["kind"]) not in explained
        ]

    def _final_command(self, command: str, patience_s: float = 40.0) -> dict[str, Any]:
        """The probe's status once final (a timed-out one may still get its late refusal)."""
        deadline = time.monotonic() + patience_s
        while True:
            found: dict[str, Any] = self.api.get(f"/api/v1/commands/{command}")
            if found.get("status") in ("succeeded", "failed", "rejected", "timed_out"):
                return found
            if time.monotonic() > deadline or self._stop.is_set():
                return found
            time.sleep(0.5)

    def _unexpected(self, parcels: list[dict[str, Any]]) -> list[str]:
        """Parcels whose state does not match what their people did."""
        plans = {p.id: p for p in self._parcels if p.id is not None}
        out = []
        for p in parcels:
            plan = plans.get(p["id"])
            if plan is None:
                continue
            # A forgetful recipient's parcel expires and goes back; the others are
            # picked up, or still waiting when the scenario ended before their visit.
            expected = {"expired", "returned"} if plan.forget else {"picked_up"}
            if not (plan.pickup_scheduled or plan.return_scheduled):
                # Still waiting for a visit when the run was stopped; once every action
                # was carried out, a parcel left reserved is one whose deposit got lost.
                expected |= {"deposited"} if self._done else {"reserved", "deposited"}
            if plan.forget and plan.return_scheduled and p["state"] == "expired":
                expected = {"returned"}  # the courier came for it
            if p["state"] not in expected:
                out.append(f"{plan.reference}: {p['state']}")
        return out
