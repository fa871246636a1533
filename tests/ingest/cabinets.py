"""Cabinets for the tests: an outbox that resends what no receipt covered yet."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from .harness import event, topic


class OutboxFleet:
    """Many cabinets on one paho connection (the test broker has no ACL).

    Like the agent: every event is kept until a receipt covers it; after each
    reconnect, and whenever receipts stall, everything unreceipted is sent again.
    """

    def __init__(self, host: str, port: int, cabinets: list[str]) -> None:
        self.cabinets = cabinets
        self.outbox: dict[str, dict[int, bytes]] = {c: {} for c in cabinets}
        self.receipted: dict[str, int] = dict.fromkeys(cabinets, 0)
        self.last_seq: dict[str, int] = dict.fromkeys(cabinets, 0)
        self.published = 0
        self.resends = 0
        self._lock = threading.Lock()
        self._progress = time.monotonic()
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fleet-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        c.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # type: ignore[arg-type]
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self.client = c
        self.client.connect(host, port, keepalive=5)
        self.client.loop_start()

    def _on_connect(self, c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        c.subscribe("lockers/+/receipts", qos=1)
        self.resend_all()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        data = json.loads(msg.payload)
        cab, upto = data["cabinet"], data["upto_seq"]
        with self._lock:
            if cab in self.outbox and upto > self.receipted[cab]:
                self.receipted[cab] = upto
                box = self.outbox[cab]
                for seq in [s for s in box if s <= upto]:
                    del box[seq]
                self._progress = time.monotonic()

    def emit(self, cabinet: str, *, boot: bool = False) -> None:
        with self._lock:
            seq = self.last_seq[cabinet] + 1
            self.last_seq[cabinet] = seq
            payload = event(cabinet, seq, boot=boot)
            self.outbox[cabinet][seq] = payload
        self._send(cabinet, payload)
        self.published += 1

    def _send(self, cabinet: str, payload: bytes) -> None:
        self.client.publish(topic(cabinet, "events"), payload, qos=1)

    def resend_all(self) -> None:
        with self._lock:
            pending = [(c, p) for c, box in self.outbox.items() for _, p in sorted(box.items())]
        for cabinet, payload in pending:
            self._send(cabinet, payload)
        self.resends += len(pending)

    def unreceipted(self) -> int:
        with self._lock:
            return sum(len(box) for box in self.outbox.values())

    def settle(self, timeout: float, stall: float = 3.0) -> None:
        """Wait until every event is receipted, resending when receipts stall."""
        deadline = time.monotonic() + timeout
        while self.unreceipted():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.unreceipted()} events never receipted: {self.receipted}"
                )
            if time.monotonic() - self._progress > stall:
                self._progress = time.monotonic()
                self.resend_all()
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
