"""Every kind of bad input lands in dead_letters with its reason; nothing crashes."""

from __future__ import annotations

import json

from smartlocker.embedded import MosquittoBroker
from smartlocker.protocol import Status, encode
from tests.support.mqtt import connected

from .harness import InProcessIngest, count, event, provision, query, topic, wait_for

GOOD = json.loads(event("cab-d", 1))


def _variant(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


BAD = [
    (topic("cab-d", "events"), b"not json at all", "malformed"),
    (topic("cab-d", "events"), b"\xff\xfe\x00", "malformed"),
    (topic("cab-d", "events"), _variant(seq="2"), "malformed"),  # no coercion
    (topic("cab-d", "events"), _variant(extra=1), "malformed"),
    (topic("cab-d", "events"), _variant(v=2), "unsupported_version"),
    (topic("cab-d", "events"), b" " * (1 << 20) + b"{}", "too_large"),
    # A status message on the events channel.
    (topic("cab-d", "events"), encode(Status(cabinet="cab-d", online=True)), "malformed"),
    # The payload claims another cabinet than the topic (whose ACL says who wrote it).
    (topic("cab-d", "events"), event("cab-other", 1), "cabinet_mismatch"),
    ("lockers/Not_A_Cabinet/events", event("cab-d", 1), "invalid_topic"),
    # Well-formed, but nobody provisioned this cabinet.
    (topic("cab-nobody", "events"), event("cab-nobody", 1), "unknown_cabinet"),
    (
        topic("cab-nobody", "telemetry"),
        b'{"v":1,"id":"t1","ts":"2026-11-21T06:00:00Z",'
        b'"cabinet":"cab-nobody","type":"telemetry","uptime_s":1,"outbox_depth":0}',
        "unknown_cabinet",
    ),
]


def test_bad_inputs_are_dead_lettered_with_reasons(
    fresh_broker: MosquittoBroker, db_url: str
) -> None:
    # A broker of its own: the retained statuses of other tests' cabinets would be
    # dead-lettered too (unknown cabinets in this database) and spoil the count.
    provision(db_url, ["cab-d", "cab-other"])
    with (
        InProcessIngest(fresh_broker.url, db_url),
        connected(fresh_broker.host, fresh_broker.port) as cab,
    ):
        cab.subscribe(topic("cab-d", "receipts"))
        for t, payload, _ in BAD:
            cab.publish(t, payload)
        cab.publish(topic("cab-d", "events"), event("cab-d", 1))
        receipt = json.loads(cab.expect(timeout=10).payload)
        assert receipt["upto_seq"] == 1
        try:
            wait_for(
                lambda: count(db_url, "SELECT count(*) FROM dead_letters") == len(BAD),
                timeout=30,
                what="every bad input dead-lettered",
            )
        except AssertionError:
            got = query(db_url, "SELECT topic, reason FROM dead_letters ORDER BY id")
            raise AssertionError(f"dead letters so far: {got}") from None
    rows = query(db_url, "SELECT topic, payload, reason, detail FROM dead_letters ORDER BY id")
    assert sorted(r[2] for r in rows) == sorted(reason for _, _, reason in BAD)
    for t, payload, reason in BAD:
        assert (t, payload, reason) in {(r[0], bytes(r[1]), r[2]) for r in rows}
    assert all(r[3] for r in rows), "every dead letter says why"
    assert count(db_url, "SELECT count(*) FROM events") == 1
