"""The three subscribers the ingest benchmark compares, each run as its own process.

* ``ingest``: the real worker (gmqtt, batches, COPY, de-duplication, receipts).
* ``relay``: the same gmqtt worker and decoding, with receipts computed in memory
  and no database at all: the ceiling for MQTT + parsing on this machine.
* ``naive``: a paho subscriber doing one ``INSERT … ON CONFLICT DO NOTHING`` per
  message (autocommit) before paho's PUBACK, with the same receipts.

``python -m smartlocker.bench.consumers VARIANT --mqtt-url … [--database-url …]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
import uuid
from collections.abc import Callable
from typing import Any

from smartlocker.cloud.ingest import IngestSettings, IngestWorker, WriterSettings
from smartlocker.cloud.ingest.app import serve
from smartlocker.cloud.ingest.intake import Inbound, TopicCache, sort_batch
from smartlocker.cloud.ingest.receipts import Cursor, EventKey, advance
from smartlocker.cloud.ingest.seam import NoRules, Rules
from smartlocker.cloud.ingest.worker import BrokerAddress
from smartlocker.cloud.ingest.writer import Outcome
from smartlocker.protocol import Channel, Receipt, TopicScheme, decode, encode, utcnow

__all__ = ["RelaySink", "main"]

logger = logging.getLogger(__name__)


class _Receipts:
    """Contiguous committed seq per cabinet, in memory (relay and naive)."""

    def __init__(self) -> None:
        self.cursors: dict[str, Cursor] = {}

    def add(self, cabinet: str, keys: list[EventKey]) -> int:
        before = self.cursors.get(cabinet) or Cursor(cabinet)
        after = advance(before, keys, utcnow())
        self.cursors[cabinet] = after
        return after.committed_seq


class RelaySink:
    """A :class:`~smartlocker.cloud.ingest.worker.Sink` that stores nothing."""

    def __init__(self, callback: Callable[[Outcome], None], prefix: str = "lockers") -> None:
        self._callback = callback
        self._topics = TopicCache(TopicScheme(prefix))
        self._receipts = _Receipts()

    def start(self) -> None:
        pass

    @property
    def backlog(self) -> int:
        return 0

    def stop(self, timeout: float = 10.0) -> None:
        pass

    def submit(self, batch: list[Inbound]) -> None:
        s = sort_batch(batch, self._topics)
        per: dict[str, list[EventKey]] = {}
        for r in s.events:
            per.setdefault(r.cabinet, []).append(EventKey(r.seq, r.ts, True, r.type == "boot"))
        receipts = {c: self._receipts.add(c, keys) for c, keys in per.items()}
        self._callback(Outcome(items=batch, receipts=receipts, new_events=len(s.events)))


def _run_worker(settings: IngestSettings, make_sink: Callable[..., Any]) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        worker = IngestWorker(settings, make_sink)
        await worker.run(stop)

    asyncio.run(main())


def _settings(mqtt_url: str, client_id: str, group: str, tuning: dict[str, Any]) -> IngestSettings:
    return IngestSettings(mqtt_url=mqtt_url, client_id=client_id, share_group=group, **tuning)


def run_relay(mqtt_url: str, group: str, tuning: dict[str, Any]) -> None:
    settings = _settings(mqtt_url, f"relay-{group}", group, tuning)
    _run_worker(settings, lambda cb: RelaySink(cb))


def run_ingest(
    mqtt_url: str, database_url: str, group: str, rules: Rules, tuning: dict[str, Any]
) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(
            _settings(mqtt_url, f"ingest-{group}", group, tuning),
            WriterSettings(database_url),
            rules,
            stop,
        )

    asyncio.run(main())


def run_naive(mqtt_url: str, database_url: str, group: str) -> None:
    import paho.mqtt.client as paho
    import psycopg
    from paho.mqtt.enums import CallbackAPIVersion

    address = BrokerAddress.parse(mqtt_url)
    scheme = TopicScheme()
    conn = psycopg.connect(database_url, autocommit=True)
    receipts = _Receipts()
    pending: dict[str, int] = {}
    lock = threading.Lock()
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"naive-{group}", protocol=paho.MQTTv5
    )

    def on_connect(c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        c.subscribe(scheme.shared(group, Channel.EVENTS), qos=1)

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        try:
            m = decode(Channel.EVENTS, msg.payload)
        except Exception:
            logger.warning("bad payload on %s", msg.topic)
            return
        cur = conn.execute(
            "INSERT INTO events (cabinet, seq, ts, id, type, compartment, body)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s::json) ON CONFLICT DO NOTHING",
            (
                m.cabinet,
                m.seq,
                m.ts,
                m.id,
                m.type,
                getattr(m, "compartment", None),
                msg.payload.decode(),
            ),
        )
        upto = receipts.add(m.cabinet, [EventKey(m.seq, m.ts, cur.rowcount == 1, False)])
        with lock:
            pending[m.cabinet] = upto

    stop = threading.Event()

    def receipt_loop() -> None:
        while not stop.wait(0.1):
            with lock:
                out = dict(pending)
                pending.clear()
            for cabinet, upto in out.items():
                client.publish(
                    str(scheme.topic(cabinet, Channel.RECEIPTS)),
                    encode(Receipt(cabinet=cabinet, upto_seq=upto)),
                    qos=1,
                )

    client.on_connect = on_connect
    client.on_message = on_message
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.connect(address.host, address.port)
    threading.Thread(target=receipt_loop, daemon=True).start()
    client.loop_forever()
    stop.set()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("variant", choices=["ingest", "relay", "naive"])
    p.add_argument("--mqtt-url", required=True)
    p.add_argument("--database-url")
    p.add_argument("--group", default=f"b{uuid.uuid4().hex[:6]}")
    p.add_argument("--rules", choices=["none", "real"], default="none")
    p.add_argument("--receive-maximum", type=int, default=None)
    p.add_argument("--batch-max", type=int, default=None)
    p.add_argument("--batch-delay", type=float, default=None)
    p.add_argument("--receipt-interval", type=float, default=None)
    a = p.parse_args(argv)
    tuning = {
        k: v
        for k, v in {
            "receive_maximum": a.receive_maximum,
            "batch_max": a.batch_max,
            "batch_delay": a.batch_delay,
            "receipt_interval": a.receipt_interval,
        }.items()
        if v is not None
    }
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    if a.variant == "relay":
        run_relay(a.mqtt_url, a.group, tuning)
    elif a.variant == "naive":
        run_naive(a.mqtt_url, a.database_url, a.group)
    else:
        rules: Rules = NoRules()
        if a.rules == "real":
            from smartlocker.cloud.ingest.seam import load_rules
            from smartlocker.cloud.keys import CloudKeys
            from smartlocker.protocol import generate_private_key

            rules = load_rules(CloudKeys.from_private_key(generate_private_key()))
        run_ingest(a.mqtt_url, a.database_url, a.group, rules, tuning)


if __name__ == "__main__":
    main()
