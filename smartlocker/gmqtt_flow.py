"""QoS 1 publishes through gmqtt within the broker's Receive Maximum.

Neutral ground for gmqtt's clients (ingest, the fleet simulator): what the room
in the broker's grant is (:func:`free_ids`), and an outbox that waits for it.

The broker grants each client a number of unacknowledged QoS 1 publishes (its
Receive Maximum; Mosquitto's ``max_inflight_messages``, 20 by default), and
gmqtt raises ``OverflowError`` for the next one instead of waiting. A simulated
cabinet that sends faster than PUBACKs return would lose the message (an ack:
the operator's request then waits in vain). :class:`FlowControl` keeps what does
not fit, in order, and sends it as PUBACKs free room. Ingest does the same for
its own publishes (``cloud/ingest/worker.py``, which also sends receipts itself)
and reads the room with :func:`free_ids`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from gmqtt import Client as MqttClient

__all__ = ["FlowControl", "free_ids"]


def free_ids(id_generator: Any) -> int:
    """How many more QoS 1 publishes gmqtt takes now (its packet-id pool, which the
    broker's Receive Maximum bounds; gmqtt refuses the id that would fill the pool)."""
    return int(id_generator._max) - 2 - len(id_generator._used_ids)


class FlowControl:
    """A per-client outbox in front of ``client.publish`` (QoS 0 and 1)."""

    def __init__(self, client: MqttClient) -> None:
        self._client = client
        self._waiting: deque[tuple[str, bytes, int, bool]] = deque()
        handler: Any = client._package_handler
        if not hasattr(handler, "_handle_puback_packet") or not hasattr(handler, "id_generator"):
            raise RuntimeError("unsupported gmqtt version: no PUBACK handler or id generator")
        self._ids = handler.id_generator
        handle_puback = handler._handle_puback_packet

        def on_puback(cmd: int, packet: bytes) -> None:
            handle_puback(cmd, packet)  # frees the packet id
            if self._waiting:
                self.pump()

        handler._handle_puback_packet = on_puback

    @property
    def waiting(self) -> int:
        """Publishes kept back for want of room."""
        return len(self._waiting)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        """Send now if the broker has room (and nothing waits before it), else later."""
        self._waiting.append((topic, payload, qos, retain))
        self.pump()

    def pump(self) -> None:
        """Send what waits, in order, while there is room (also after a reconnect)."""
        if not self._client.is_connected:
            return
        while self._waiting:
            topic, payload, qos, retain = self._waiting[0]
            if qos and free_ids(self._ids) <= 0:
                return
            self._waiting.popleft()
            self._client.publish(topic, payload, qos=qos, retain=retain)
