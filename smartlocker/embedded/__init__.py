"""Helpers that run third-party servers privately for tests, benchmarks and the demo.

Nothing here is needed in production: a real deployment runs its own broker.
"""

from .mosquitto import BrokerError, MosquittoBroker, TlsFiles, free_port

__all__ = ["BrokerError", "MosquittoBroker", "TlsFiles", "free_port"]
