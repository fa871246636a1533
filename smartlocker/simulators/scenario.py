"""Couriers and recipients at work over a compressed day, through the REST API and kiosks.

People act the way real ones do: couriers reserve and deposit (with the kiosk's
deposit code or through the API), recipients read their code from a message and
pick up (at the kiosk or through the app), some come late, some forget, some type
wrong codes first; couriers take expired parcels back. Every action is one call
of the real API or a real kiosk; the world around the doors is the virtual
cabinets'. :meth:`Scenario.run` ends with a :class:`Summary`.
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
from typing import Any

from .api_client import ApiClient, ApiProblem
from .inbox import CodeInbox

__all__ = ["Scenario", "ScenarioConfig", "Summary"]

logger = logging.getLogger(__name__)

FINAL_STATES = ("picked_up", "returned", "cancelled")
SIZES = ("s", "m", "l")


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
    ) -> None:
        self.config = config
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
                    due = self._heap and self._heap[0][0] <= now
                    item = heapq.heappop(self._heap) if due else None
                if item is not None:
                    with self._lock:
                        self._running += 1
                    people.submit(self._act, item[2], item[3])
                    continue
                if now > end and self._settled():
                    break
                if now > end + self.config.settle_s:
                    break
                self._stop.wait(0.05)
        self._collect()
        return self.summary

    def _settled(self) -> bool:
        with self._lock:
            return not self._heap and self._running == 0

    # --- people -------------------------------------------------------------------------------

    def _act(self, action: str, parcel: _Parcel) -> None:
        try:
            self._attempt(action, parcel)
        finally:
            with self._lock:
                self._running -= 1

    def _attempt(self, action: str, parcel: _Parcel) -> None:
        try:
            getattr(self, f"_{action}")(parcel)
            with self._lock:
                self.summary.actions[action] += 1
        except ApiProblem as exc:
            with self._lock:
                self.summary.failures[f"{action}: {exc.slug}"] += 1
            logger.warning("%s of %s failed: %s", action, parcel.reference, exc)
        except Exception:
            with self._lock:
                self.summary.failures[f"{action}: crashed"] += 1
            logger.exception("%s of %s crashed", action, parcel.reference)

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
        if parcel.kiosk_deposit and parcel.cabinet in self.kiosks:
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

    def _pickup(self, parcel: _Parcel) -> None:
        assert parcel.id is not None
        assert parcel.cabinet is not None
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
                expected |= {"reserved", "deposited"}
            if plan.forget and plan.return_scheduled and p["state"] == "expired":
                expected = {"returned"}  # the courier came for it
            if p["state"] not in expected:
                out.append(f"{plan.reference}: {p['state']}")
        return out
