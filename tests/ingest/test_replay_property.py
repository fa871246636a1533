"""Hypothesis: deliveries replayed three times, reordered and batched at random.

Through the real writer and database: whatever the order and the batching, the
table holds each distinct event once, and every receipt only covers events that
were committed when it was issued.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartlocker.cloud.ingest.intake import Inbound, TopicCache
from smartlocker.cloud.ingest.seam import NoRules
from smartlocker.cloud.ingest.writer import Writer, WriterSettings
from smartlocker.protocol import TopicScheme

from .harness import event, provision, topic

CABINETS = ("cab-p1", "cab-p2", "cab-p3")


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[dict[str, int], list[list[tuple[str, int]]]]:
    last = {c: draw(st.integers(0, 12)) for c in CABINETS}
    events = [(c, s) for c, n in last.items() for s in range(1, n + 1)]
    stream: list[tuple[str, int]] = []
    for _ in range(3):  # replayed three times, each time in another order
        stream += draw(st.permutations(events))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    batches, start = [], 0
    for cut in [*cuts, len(stream)]:
        batches.append(stream[start:cut])
        start = cut
    return last, [b for b in batches if b]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=deliveries())
def test_replayed_reordered_deliveries_store_each_event_once(
    db_url: str, case: tuple[dict[str, int], list[list[tuple[str, int]]]]
) -> None:
    last, batches = case
    with psycopg.connect(db_url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('events')").fetchone() == (None,):
            provision(db_url, CABINETS)
        conn.execute("TRUNCATE events, ingest_cursors, ingest_presence, dead_letters")
    writer = Writer(WriterSettings(db_url), NoRules(), TopicCache(TopicScheme()), lambda o: None)
    now = datetime.now(UTC)
    try:
        for batch in batches:
            items = [Inbound(topic(c, "events"), event(c, s), now) for c, s in batch]
            outcome = writer._commit(items)
            with psycopg.connect(db_url) as check:
                for cabinet, upto in outcome.receipts.items():
                    have = check.execute(
                        "SELECT count(DISTINCT seq) FROM events"
                        " WHERE cabinet = %s AND seq BETWEEN 1 AND %s",
                        (cabinet, upto),
                    ).fetchone()
                    assert have == (upto,), f"receipt {upto} for {cabinet} covers missing events"
    finally:
        writer._drop_connection()
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT cabinet, count(*) FROM events GROUP BY cabinet").fetchall()
        cursors = dict(conn.execute("SELECT cabinet, committed_seq FROM ingest_cursors"))
    assert dict(rows) == {c: n for c, n in last.items() if n}
    assert {c: cursors.get(c, 0) for c in CABINETS} == last


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=deliveries(), turns=st.lists(st.booleans(), min_size=10, max_size=10))
def test_two_writers_sharing_the_stream_keep_receipts_true(
    db_url: str, case: tuple[dict[str, int], list[list[tuple[str, int]]]], turns: list[bool]
) -> None:
    """Each batch to one of two writers, whose remembered cursors go stale in turn."""
    last, batches = case
    with psycopg.connect(db_url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('events')").fetchone() == (None,):
            provision(db_url, CABINETS)
        conn.execute("TRUNCATE events, ingest_cursors, ingest_presence, dead_letters")
    writers = [
        Writer(WriterSettings(db_url), NoRules(), TopicCache(TopicScheme()), lambda o: None)
        for _ in range(2)
    ]
    now = datetime.now(UTC)
    try:
        for i, batch in enumerate(batches):
            writer = writers[turns[i % len(turns)]]
            items = [Inbound(topic(c, "events"), event(c, s), now) for c, s in batch]
            outcome = writer._commit(items)
            with psycopg.connect(db_url) as check:
                for cabinet, upto in outcome.receipts.items():
                    have = check.execute(
                        "SELECT count(DISTINCT seq) FROM events"
                        " WHERE cabinet = %s AND seq BETWEEN 1 AND %s",
                        (cabinet, upto),
                    ).fetchone()
                    assert have == (upto,), f"receipt {upto} for {cabinet} covers missing events"
    finally:
        for writer in writers:
            writer._drop_connection()
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT cabinet, count(*) FROM events GROUP BY cabinet").fetchall()
        cursors = dict(conn.execute("SELECT cabinet, committed_seq FROM ingest_cursors"))
    assert dict(rows) == {c: n for c, n in last.items() if n}
    assert {c: cursors.get(c, 0) for c in CABINETS} == last
