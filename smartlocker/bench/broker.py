"""The benchmark's private Mosquitto, tuned as a deployment should be."""

from __future__ import annotations

from smartlocker.embedded import MosquittoBroker

__all__ = ["INFLIGHT", "BenchBroker"]

#: Mosquitto's default ``max_inflight_messages`` is 20, and for MQTT 5 clients it is
#: also the Receive Maximum it grants: at most 20 unacknowledged QoS 1 publishes per
#: client. Ingest publishes a receipt per active cabinet per interval, which at tens
#: of thousands of events/s needs more room than that.
INFLIGHT = 1000


class BenchBroker(MosquittoBroker):
    def _write_config(self) -> None:
        super()._write_config()
        with open(self.config_path, "a") as f:
            f.write(f"max_inflight_messages {INFLIGHT}\n")
