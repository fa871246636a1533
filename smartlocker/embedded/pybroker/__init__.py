"""A small in-process MQTT 5.0 / 3.1.1 broker for the demo and development.

Not for production (see docs/pybroker.md): one process, one thread, state in memory.
Modules with one job each: ``codec`` (packets ↔ bytes, pure), ``topics`` (filters and
matching, pure), ``state`` (sessions, subscriptions, retained, routing; pure),
``auth`` (Mosquitto password file and ACL), ``server`` (asyncio), ``broker``
(:class:`PythonBroker`, the thread-owning front with MosquittoBroker's interface).
"""

from .broker import PythonBroker
from .errors import MalformedPacket, PacketTooLarge, ProtocolViolation, PyBrokerError

__all__ = [
    "MalformedPacket",
    "PacketTooLarge",
    "ProtocolViolation",
    "PyBrokerError",
    "PythonBroker",
]
