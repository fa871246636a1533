"""Helpers that run servers privately for tests, benchmarks and the demo.

Nothing here is needed in production: a real deployment runs its own broker.
The broker is the system's Mosquitto (:class:`MosquittoBroker`) or, where it is
not installed, the in-process :class:`PythonBroker` (:func:`make_broker`).
Private PostgreSQL clusters for the tests and benchmarks start through
:func:`.pg_cluster.start_cluster`; the demo's is :mod:`.postgres`.
"""

from .choice import BROKER_KINDS, BrokerKind, EmbeddedBroker, make_broker, resolve_broker_kind
from .mosquitto import BrokerError, MosquittoBroker, TlsFiles, free_port
from .pybroker import PythonBroker

__all__ = [
    "BROKER_KINDS",
    "BrokerError",
    "BrokerKind",
    "EmbeddedBroker",
    "MosquittoBroker",
    "PythonBroker",
    "TlsFiles",
    "free_port",
    "make_broker",
    "resolve_broker_kind",
]
