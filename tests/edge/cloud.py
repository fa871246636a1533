"""The test's side of the wire: a paho client that acts as the cloud.

It signs and publishes commands and desired states with a test Ed25519 key, reads
everything the cabinet sends, and (unless told not to) publishes a receipt for
every event it accepts. It checks the outbox contract as it goes: an event is
accepted only if its ``seq`` is the next one; a ``seq`` beyond that is a gap.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from smartlocker.protocol import (
    Ack,
    Channel,
    CodeGrant,
    DesiredCompartment,
    DesiredState,
    Ed25519PrivateKey,
    Receipt,
    Reported,
    Status,
    Telemetry,
    TopicScheme,
    UnlockCommand,
    decode_uplink,
    encode,
    sign,
)

TIMEOUT = 10.0


class Cloud:
    def __init__(
        self,
        host: str,
        port: int,
        cabinet: str,
        key: Ed25519PrivateKey,
        *,
        receipts: bool = True,
        strict: bool = True,
        prefix: str = "lockers",
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.cabinet = cabinet
        self.key = key
        self.receipts = receipts
        self.scheme = TopicScheme(prefix)
        self.cond = threading.Condition()
        self.events: list[Any] = []  # accepted, in seq order
        self.committed = 0
        self.duplicates = 0
        #: strict: an event beyond the next seq is a violation (a gap). Not strict (when
        #: the test kills the broker, and with it this client's subscription): it is
        #: dropped uncommitted, like the real cloud does, and must come again later.
        self.strict = strict
        self.gaps: list[tuple[int, int]] = []
        self.early = 0
        self.acks: list[Ack] = []
        self.statuses: list[tuple[Status, bool]] = []
        self.reported: list[Reported] = []
        self.telemetry: list[Telemetry] = []
        self.undecodable: list[bytes] = []
        self.counter = 0
        self.connected = threading.Event()
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"cloud-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        if username is not None:
            c.username_pw_set(username, password)
        c.reconnect_delay_set(min_delay=0.05, max_delay=0.3)  # type: ignore[arg-type]
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = lambda *_a: self.connected.clear()
        self.client = c
        c.connect(host, port, keepalive=10)
        c.loop_start()
        assert self.connected.wait(TIMEOUT), "cloud client did not connect"

    def topic(self, channel: Channel) -> str:
        return str(self.scheme.topic(self.cabinet, channel))

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        client.subscribe(
            [
                (self.topic(ch), 1)
                for ch in (
                    Channel.EVENTS,
                    Channel.ACKS,
                    Channel.STATUS,
                    Channel.REPORTED,
                    Channel.TELEMETRY,
                )
            ]
        )

    def _on_subscribe(self, *_a: Any) -> None:
        self.connected.set()

    def _on_message(self, client: Any, _u: Any, msg: Any) -> None:
        try:
            message = decode_uplink(msg.payload)
        except ValueError:
            with self.cond:
                self.undecodable.append(bytes(msg.payload))
                self.cond.notify_all()
            return
        with self.cond:
            if isinstance(message, Ack):
                self.acks.append(message)
            elif isinstance(message, Status):
                self.statuses.append((message, bool(msg.retain)))
            elif isinstance(message, Reported):
                self.reported.append(message)
            elif isinstance(message, Telemetry):
                self.telemetry.append(message)
            else:
                seq = message.seq
                if seq <= self.committed:
                    self.duplicates += 1
                elif seq == self.committed + 1:
                    self.committed = seq
                    self.events.append(message)
                    if self.receipts:
                        receipt = Receipt(cabinet=self.cabinet, upto_seq=seq)
                        client.publish(self.topic(Channel.RECEIPTS), encode(receipt), qos=1)
                elif self.strict:
                    self.gaps.append((self.committed, seq))
                else:
                    self.early += 1
            self.cond.notify_all()

    # -- waiting -------------------------------------------------------------------

    def wait(self, predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = "") -> None:
        # Polled as well as notified: predicates may look at the agent's state too.
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what or predicate}"
                    )
                self.cond.wait(min(left, 0.02))

    def events_of(self, type_: str) -> list[Any]:
        with self.cond:
            return [e for e in self.events if e.type == type_]

    def wait_event(
        self, type_: str, count: int = 1, timeout: float = TIMEOUT, **fields: Any
    ) -> list[Any]:
        def match() -> list[Any]:
            return [
                e
                for e in self.events
                if e.type == type_ and all(getattr(e, k) == v for k, v in fields.items())
            ]

        self.wait(lambda: len(match()) >= count, timeout, f"{count} {type_} {fields}")
        with self.cond:
            return match()

    def wait_ack(self, command_id: str, count: int = 1, timeout: float = TIMEOUT) -> list[Ack]:
        self.wait(
            lambda: sum(a.command_id == command_id for a in self.acks) >= count,
            timeout,
            f"{count} ack(s) of {command_id}",
        )
        with self.cond:
            return [a for a in self.acks if a.command_id == command_id]

    # -- downlink ------------------------------------------------------------------------

    def publish(self, channel: Channel, payload: bytes | str, *, retain: bool = False) -> None:
        info = self.client.publish(self.topic(channel), payload, qos=1, retain=retain)
        info.wait_for_publish(TIMEOUT)

    def unlock_command(
        self,
        compartment: str = "a1",
        *,
        cabinet: str | None = None,
        counter: int | None = None,
        expires_in: float = 30.0,
        key: Ed25519PrivateKey | None = None,
        ts: datetime | None = None,
    ) -> UnlockCommand:
        if counter is None:
            self.counter += 1
            counter = self.counter
        now = ts or datetime.now(UTC)
        command = UnlockCommand(
            cabinet=cabinet or self.cabinet,
            compartment=compartment,
            counter=counter,
            ts=now,
            expires=now + timedelta(seconds=expires_in),
            reason="test",
        )
        return sign(command, key or self.key)

    def send(self, message: Any, *, retain: bool = False) -> None:
        channel = Channel.DESIRED if isinstance(message, DesiredState) else Channel.COMMANDS
        self.publish(channel, encode(message), retain=retain)

    def desired_state(
        self,
        version: int,
        *,
        compartments: dict[str, bool] | None = None,
        codes: list[CodeGrant] | None = None,
    ) -> DesiredState:
        state = DesiredState(
            cabinet=self.cabinet,
            version=version,
            compartments=[
                DesiredCompartment(id=k, enabled=v) for k, v in (compartments or {}).items()
            ],
            codes=codes or [],
        )
        return sign(state, self.key)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()
