"""Birth, last will with anti-flap, heartbeat silence: what the rules are told."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from smartlocker.cloud.ingest.intake import Inbound, TopicCache
from smartlocker.cloud.ingest.presence import PresencePolicy
from smartlocker.cloud.ingest.seam import NoRules
from smartlocker.cloud.ingest.writer import Writer, WriterSettings
from smartlocker.protocol import Status, Telemetry, TopicScheme, encode

from .harness import provision, topic

T0 = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


class Recorder(NoRules):
    """Real rules are the core's; here we only record what ingest tells them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def on_status(self, conn: Any, status: Status, now: datetime) -> Any:
        self.calls.append(("status", status.cabinet, status.online))

    def on_silence(self, conn: Any, cabinet: str, last_seen: datetime, now: datetime) -> Any:
        self.calls.append(("silence", cabinet, last_seen))

    def on_telemetry(self, conn: Any, readings: Sequence[Telemetry], now: datetime) -> Any:
        self.calls.append(("telemetry", readings[0].cabinet, len(readings)))


def test_presence_with_anti_flap_and_silence(db_url: str) -> None:
    provision(db_url, ["cab-s"])
    clock = {"now": T0}
    rules = Recorder()
    policy = PresencePolicy(
        heartbeat_timeout=timedelta(seconds=60), flap_grace=timedelta(seconds=10)
    )
    writer = Writer(
        WriterSettings(db_url, policy=policy),
        rules,
        TopicCache(TopicScheme()),
        lambda o: None,
        clock=lambda: clock["now"],
    )

    def send(message: Any, channel: str) -> None:
        writer._commit([Inbound(topic(message.cabinet, channel), encode(message), clock["now"])])

    def at(seconds: float) -> datetime:
        clock["now"] = T0 + timedelta(seconds=seconds)
        return clock["now"]

    try:
        send(Status(cabinet="cab-s", online=True, ts=at(0)), "status")
        assert rules.calls == [("status", "cab-s", True)]
        # A blip: last will, then a new birth within the grace: the rules never hear of it.
        send(Status(cabinet="cab-s", online=False, ts=at(5)), "status")
        writer._sweep()
        send(Status(cabinet="cab-s", online=True, ts=at(8)), "status")
        at(30)
        writer._sweep()
        assert rules.calls == [("status", "cab-s", True)]
        # A real loss: the will stands past the grace.
        send(Status(cabinet="cab-s", online=False, ts=at(40)), "status")
        at(45)
        writer._sweep()
        assert rules.calls[-1:] == [("status", "cab-s", True)]
        at(51)
        writer._sweep()
        assert rules.calls[-1] == ("status", "cab-s", False)
        # Back; then telemetry stops: silence after the heartbeat timeout.
        send(Status(cabinet="cab-s", online=True, ts=at(60)), "status")
        assert rules.calls[-1] == ("status", "cab-s", True)
        send(Telemetry(cabinet="cab-s", uptime_s=1, outbox_depth=0, ts=at(70)), "telemetry")
        assert rules.calls[-1] == ("telemetry", "cab-s", 1)
        at(125)
        writer._sweep()
        assert rules.calls[-1][0] == "telemetry"
        at(131)
        writer._sweep()
        assert rules.calls[-1] == ("silence", "cab-s", T0 + timedelta(seconds=70))
        writer._sweep()
        assert [c[0] for c in rules.calls].count("silence") == 1, "reported once"
        # Traffic again from a cabinet declared offline by silence: online again.
        send(Telemetry(cabinet="cab-s", uptime_s=2, outbox_depth=0, ts=at(140)), "telemetry")
        assert rules.calls[-1] == ("status", "cab-s", True)
        # A stale status (older ts than the one applied) is ignored.
        send(Status(cabinet="cab-s", online=False, ts=at(10)), "status")
        at(200)
        writer._sweep()
        assert rules.calls[-1] == ("status", "cab-s", True)
    finally:
        writer._drop_connection()
