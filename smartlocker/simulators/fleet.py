"""A light fleet of simulated cabinets in one asyncio process, for load and demos.

Each :class:`SimulatedCabinet` speaks the real protocol: it verifies signed
commands with the agent's own pure checks (:func:`verify_command`,
:func:`verify_desired`), keeps its events until the cloud's receipt and sends
them again after a reconnect or a timeout, honours the desired state, and sends
heartbeats. Its hardware is a model: a door opens after an accepted unlock and
closes a little later. State lives in memory, so thousands fit in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gmqtt import Client as MqttClient
from gmqtt.mqtt.constants import MQTTv50

from smartlocker.edge_agent.commands import Accepted, Duplicate, Rejected, verify_command
from smartlocker.edge_agent.desired import DesiredView, verify_desired
from smartlocker.edge_agent.store import CommandRecord
from smartlocker.gmqtt_flow import FlowControl
from smartlocker.protocol import (
    Ack,
    AckOutcome,
    BootEvent,
    Channel,
    CompartmentReport,
    DoorClosed,
    DoorOpened,
    DoorState,
    Ed25519PublicKey,
    Event,
    ProtocolError,
    Receipt,
    ReplayWindow,
    Reported,
    Status,
    Telemetry,
    TopicScheme,
    Unlocked,
    UnlockSource,
    decode,
    encode,
)

__all__ = ["FleetStats", "SimulatedCabinet", "SimulatedFleet"]

logger = logging.getLogger(__name__)

AGENT_VERSION = "fleet-sim"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class FleetStats:
    """Counters over the whole fleet (the scenario summary reads them)."""

    connected: int = 0
    events_produced: int = 0
    events_receipted: int = 0
    resent: int = 0
    telemetry_sent: int = 0
    commands_accepted: int = 0
    commands_rejected: int = 0
    duplicates: int = 0
    desired_applied: int = 0
    malformed: int = 0
    rejections: dict[str, int] = field(default_factory=dict)


class SimulatedCabinet:
    """One cabinet's protocol behaviour, with its state in memory."""

    def __init__(
        self,
        fleet: SimulatedFleet,
        cabinet: str,
        compartments: Sequence[str],
        password: str | None,
    ) -> None:
        self.fleet = fleet
        self.id = cabinet
        self.compartments = list(compartments)
        self.password = password
        self.seq = 0
        self.outbox: OrderedDict[int, bytes] = OrderedDict()
        self.last_sent = 0.0
        #: Counters seen (in memory, like all of a simulated cabinet's state).
        self.replay = ReplayWindow()
        self.results: dict[str, CommandRecord] = {}
        self.desired = DesiredView.empty()
        self.doors = dict.fromkeys(self.compartments, False)
        self.started = time.monotonic()
        self.client: MqttClient | None = None
        self._flow: FlowControl | None = None
        scheme = fleet.scheme
        self._topics = {channel: str(scheme.topic(cabinet, channel)) for channel in Channel}
        self._by_topic = {topic: channel for channel, topic in self._topics.items()}

    # --- connection -------------------------------------------------------------

    async def connect(self) -> None:
        will = Status(cabinet=self.id, online=False, agent_version=AGENT_VERSION)
        client = MqttClient(
            self.id,
            clean_session=False,
            session_expiry_interval=3600,
            will_message=_will(self._topics[Channel.STATUS], encode(will)),
        )
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        if self.password is not None:
            client.set_auth_credentials(self.id, self.password)
        self.client = client
        self._flow = FlowControl(client)
        await client.connect(
            self.fleet.host, self.fleet.port, ssl=self.fleet.ssl, version=MQTTv50, keepalive=60
        )

    def _on_connect(self, client: MqttClient, flags: int, rc: int, properties: Any) -> None:
        self.fleet.stats.connected += 1
        for channel in (Channel.COMMANDS, Channel.DESIRED, Channel.RECEIPTS):
            client.subscribe(self._topics[channel], qos=1)
        status = Status(cabinet=self.id, online=True, agent_version=AGENT_VERSION)
        if self._flow is not None:
            self._flow.pump()  # what waited for room when the connection dropped
        self._publish(Channel.STATUS, encode(status), retain=True)
        if self.seq == 0:
            self.emit(BootEvent(cabinet=self.id, seq=1, agent_version=AGENT_VERSION))
        self.resend()
        self.report()

    def _on_disconnect(self, client: MqttClient, packet: Any, exc: Any = None) -> None:
        self.fleet.stats.connected -= 1

    async def disconnect(self) -> None:
        if self.client is not None and self.client.is_connected:
            status = Status(cabinet=self.id, online=False, agent_version=AGENT_VERSION)
            self._publish(Channel.STATUS, encode(status), retain=True)
            await self.client.disconnect()

    # --- outbox ---------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Give the event the next seq, keep it until receipted, publish it."""
        self.seq += 1
        payload = encode(event.model_copy(update={"seq": self.seq}))
        self.outbox[self.seq] = payload
        self.fleet.stats.events_produced += 1
        self._publish(Channel.EVENTS, payload)
        self.last_sent = time.monotonic()

    def resend(self) -> None:
        """Send every unreceipted event again, in order (after reconnects and timeouts)."""
        for payload in self.outbox.values():
            self._publish(Channel.EVENTS, payload)
            self.fleet.stats.resent += 1
        self.last_sent = time.monotonic()

    def _publish(self, channel: Channel, payload: bytes, retain: bool = False) -> None:
        if self._flow is not None and self.client is not None and self.client.is_connected:
            self._flow.publish(self._topics[channel], payload, channel.qos or 1, retain)

    # --- downlink ------------------------------------------------------------------------

    def _on_message(
        self, client: MqttClient, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        channel = self._by_topic.get(topic)
        try:
            if channel is Channel.RECEIPTS:
                receipt = decode(Channel.RECEIPTS, payload)
                assert isinstance(receipt, Receipt)
                self.on_receipt(receipt.upto_seq)
            elif channel is Channel.COMMANDS:
                self.on_command(payload, retained=bool(properties.get("retain")))
            elif channel is Channel.DESIRED:
                self.on_desired(payload)
        except ProtocolError as exc:
            self.fleet.stats.malformed += 1
            logger.warning("%s: refused %s message: %s", self.id, topic, exc)
        return 0

    def on_receipt(self, upto: int) -> None:
        while self.outbox:
            seq = next(iter(self.outbox))
            if seq > upto:
                break
            del self.outbox[seq]
            self.fleet.stats.events_receipted += 1

    def on_command(self, payload: bytes, *, retained: bool) -> None:
        verdict = verify_command(
            payload,
            retained=retained,
            key=self.fleet.public_key,
            cabinet=self.id,
            now=self.fleet.clock(),
            skew=self.fleet.skew,
            replay=self.replay,
            known=self.results.get,
        )
        if isinstance(verdict, Duplicate):
            self.fleet.stats.duplicates += 1
            if verdict.record.ack is not None:
                self._publish(Channel.ACKS, verdict.record.ack)
            return
        if isinstance(verdict, Rejected):
            self.fleet.stats.commands_rejected += 1
            stats = self.fleet.stats.rejections
            stats[verdict.reason] = stats.get(verdict.reason, 0) + 1
            if verdict.authentic and verdict.counter is not None:
                self.replay.add(verdict.counter)
            if verdict.command_id is not None:
                self._ack(
                    verdict.command_id,
                    verdict.compartment,
                    AckOutcome.REJECTED,
                    verdict.reason,
                    verdict.counter,
                )
            return
        assert isinstance(verdict, Accepted)
        command = verdict.command
        self.replay.add(command.counter)
        if command.compartment not in self.doors:
            self._ack(
                command.id,
                command.compartment,
                AckOutcome.REJECTED,
                "unknown_compartment",
                command.counter,
            )
            return
        if not self.desired.is_enabled(command.compartment):
            self._ack(
                command.id, command.compartment, AckOutcome.REJECTED, "disabled", command.counter
            )
            return
        self.fleet.stats.commands_accepted += 1
        self.emit(
            Unlocked(
                cabinet=self.id,
                seq=1,
                compartment=command.compartment,
                source=UnlockSource.COMMAND,
                command_id=command.id,
                pulse_ms=self.fleet.pulse_ms,
            )
        )
        self._open_door(command.compartment)
        self._ack(command.id, command.compartment, AckOutcome.OPENED, None, command.counter)

    def _ack(
        self,
        command_id: str,
        compartment: str | None,
        outcome: AckOutcome,
        reason: str | None,
        counter: int | None,
    ) -> None:
        ack = encode(
            Ack(
                cabinet=self.id,
                command_id=command_id,
                compartment=compartment,
                outcome=outcome,
                reason=reason,
            )
        )
        self.results[command_id] = CommandRecord(
            command_id, counter, compartment, outcome.value, ack, True
        )
        self._publish(Channel.ACKS, ack)

    def _open_door(self, compartment: str) -> None:
        """The simulated person: pulls the door open now, closes it a little later."""
        self.doors[compartment] = True
        self.emit(DoorOpened(cabinet=self.id, seq=1, compartment=compartment, granted=True))
        opened = time.monotonic()

        def close() -> None:
            if self.doors.get(compartment):
                self.doors[compartment] = False
                self.emit(
                    DoorClosed(
                        cabinet=self.id,
                        seq=1,
                        compartment=compartment,
                        open_seconds=round(time.monotonic() - opened, 3),
                    )
                )

        asyncio.get_running_loop().call_later(self.fleet.door_open_s, close)

    def on_desired(self, payload: bytes) -> None:
        try:
            state = verify_desired(
                payload,
                key=self.fleet.public_key,
                cabinet=self.id,
                applied_version=self.desired.version,
            )
        except ProtocolError as exc:
            if exc.reason != "already_applied":
                raise
            return
        self.desired = DesiredView.of(state)
        self.fleet.stats.desired_applied += 1
        self.report()

    def report(self) -> None:
        reported = Reported(
            cabinet=self.id,
            desired_version=self.desired.version,
            compartments=[
                CompartmentReport(
                    id=c,
                    door=DoorState.OPEN if self.doors[c] else DoorState.CLOSED,
                    enabled=self.desired.is_enabled(c),
                )
                for c in self.compartments
            ],
            agent_version=AGENT_VERSION,
        )
        self._publish(Channel.REPORTED, encode(reported), retain=True)

    def heartbeat(self) -> None:
        telemetry = Telemetry(
            cabinet=self.id,
            uptime_s=round(time.monotonic() - self.started, 3),
            outbox_depth=len(self.outbox),
        )
        self._publish(Channel.TELEMETRY, encode(telemetry))
        self.fleet.stats.telemetry_sent += 1
        if self.outbox and time.monotonic() - self.last_sent > self.fleet.receipt_timeout_s:
            self.resend()


def _will(topic: str, payload: bytes) -> Any:
    from gmqtt import Message

    return Message(topic, payload, qos=1, retain=True)


class SimulatedFleet:
    """Thousands of :class:`SimulatedCabinet` in one event loop."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        public_key: Ed25519PublicKey,
        cabinets: dict[str, Sequence[str]],
        passwords: dict[str, str] | None = None,
        ssl: Any = False,
        prefix: str = "lockers",
        heartbeat_s: float = 30.0,
        receipt_timeout_s: float = 10.0,
        door_open_s: float = 2.0,
        pulse_ms: int = 500,
        skew: timedelta = timedelta(seconds=30),
        connects_per_s: float = 500.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.host = host
        self.port = port
        self.public_key = public_key
        self.ssl = ssl
        self.scheme = TopicScheme(prefix)
        self.heartbeat_s = heartbeat_s
        self.receipt_timeout_s = receipt_timeout_s
        self.door_open_s = door_open_s
        self.pulse_ms = pulse_ms
        self.skew = skew
        self.connects_per_s = connects_per_s
        self.clock = clock
        self.stats = FleetStats()
        passwords = passwords or {}
        self.cabinets = {
            cabinet: SimulatedCabinet(self, cabinet, compartments, passwords.get(cabinet))
            for cabinet, compartments in cabinets.items()
        }
        self._heartbeat_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect every cabinet (paced, so the broker is not flooded), then beat."""
        pause = 1.0 / self.connects_per_s
        for cabinet in self.cabinets.values():
            await cabinet.connect()
            await asyncio.sleep(pause)
        self._heartbeat_task = asyncio.create_task(self._heartbeats())

    async def _heartbeats(self) -> None:
        """One loop for all cabinets, spread evenly over the interval."""
        cabinets = list(self.cabinets.values())
        offset = random.random() * self.heartbeat_s
        await asyncio.sleep(min(offset, 1.0))
        while True:
            started = time.monotonic()
            if not cabinets:
                await asyncio.sleep(self.heartbeat_s)
                continue
            step = self.heartbeat_s / len(cabinets)
            for i, cabinet in enumerate(cabinets):
                cabinet.heartbeat()
                delay = started + (i + 1) * step - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)

    async def stop(self) -> None:
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        await asyncio.gather(
            *(c.disconnect() for c in self.cabinets.values()), return_exceptions=True
        )
