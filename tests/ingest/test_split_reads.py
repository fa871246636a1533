"""Ingest parses the broker's bytes itself (``IngestWorker._read_packets``): packets
that arrive in pieces, cut anywhere (inside the fixed header, the remaining-length
varint, the topic, the payload), are all ingested, once, in order."""

from __future__ import annotations

from smartlocker.embedded import MosquittoBroker
from tests.support.mqtt import connected
from tests.support.tcpproxy import TcpProxy

from .harness import InProcessIngest, count, event, provision, query, topic, wait_for


def test_packets_cut_into_pieces_of_one_to_seven_bytes_are_all_ingested(
    fresh_broker: MosquittoBroker, db_url: str
) -> None:
    cabinets = ["cab-r1", "cab-r2", "cab-r3"]
    provision(db_url, cabinets)
    with (
        TcpProxy(fresh_broker.host, fresh_broker.port, server_chunks=(1, 7)) as proxy,
        InProcessIngest(f"mqtt://{proxy.host}:{proxy.port}", db_url) as ingest,
        connected(fresh_broker.host, fresh_broker.port) as cab,
    ):
        for c in cabinets:
            cab.subscribe(topic(c, "receipts"))
        for seq in range(1, 61):
            for c in cabinets:
                cab.publish(topic(c, "events"), event(c, seq))
        wait_for(
            lambda: count(db_url, "SELECT count(*) FROM events") == 180,
            timeout=60,
            what="every event stored",
        )
        wait_for(
            lambda: ingest.worker is not None and ingest.worker._unacked == 0,
            what="every message acknowledged",
        )
    # Each event packet is over 200 bytes: cut into 1..7-byte pieces, each of them
    # arrived in many reads (the proxy pauses between pieces).
    assert proxy.pieces > 180 * 200 // 7
    assert query(
        db_url,
        "SELECT cabinet, count(*), min(seq), max(seq), count(DISTINCT seq)"
        " FROM events GROUP BY cabinet ORDER BY cabinet",
    ) == [(c, 60, 1, 60, 60) for c in cabinets]
    assert count(db_url, "SELECT count(*) FROM dead_letters") == 0
    assert query(db_url, "SELECT cabinet, committed_seq FROM ingest_cursors ORDER BY cabinet") == [
        (c, 60) for c in cabinets
    ]
