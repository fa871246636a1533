"""Migration 0010 (one index, ``json`` body) on a database that already holds events.

On both flavors (on TimescaleDB with several chunks): every row survives the upgrade
with the same content, the table keeps exactly one index, and a writer that was
running on the old schema goes on after it without losing or dead-lettering anything.
The API's audit-trail query still reaches events through that index.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from smartlocker.cloud.api.insight import _TRAIL
from smartlocker.cloud.db import migrate
from smartlocker.cloud.ingest.intake import Inbound, TopicCache
from smartlocker.cloud.ingest.seam import NoRules
from smartlocker.cloud.ingest.writer import Writer, WriterSettings
from smartlocker.cloud.rules.fleet import CompartmentSpec, create_cabinet, create_site
from smartlocker.protocol import TopicScheme
from tests.support.pg import PgCluster

from .harness import T0, count, event, query, topic

CABINETS = ("cab-m1", "cab-m2")
#: Bodies the old writer never produced but a jsonb column may hold: they must
#: come out of the type change as the same JSON.
ODD_BODIES = (
    '{"note": "Zürich ✓ \\"quoted\\"\\n", "nested": {"a": [1, 2.50, null, true]}}',
    '{"big": 12345678901234567890, "small": 1e-7, "empty": {}, "list": []}',
)
_ROWS = (
    "SELECT cabinet, seq, ts, id, type, compartment, body::jsonb::text, received_at"
    " FROM events ORDER BY cabinet, seq, ts"
)


def _provision(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        create_site(conn, "site-m", "Migration site")
        for cabinet in CABINETS:
            create_cabinet(conn, cabinet, "site-m", [CompartmentSpec(id="c1", size="m")])


def _events(seqs: range, now: datetime) -> list[Inbound]:
    # 10 seqs a day over three days: several chunks on TimescaleDB.
    return [
        Inbound(
            topic(c, "events"),
            event(c, s, ts=T0 - timedelta(days=2) + timedelta(days=(s - 1) // 10, seconds=s)),
            now,
        )
        for c in CABINETS
        for s in seqs
    ]


def _indexes(url: str) -> list[str]:
    rows = query(url, "SELECT indexdef FROM pg_indexes WHERE tablename = 'events'")
    return sorted(r[0] for r in rows)


def _writer(url: str) -> Writer:
    return Writer(WriterSettings(url), NoRules(), TopicCache(TopicScheme()), lambda o: None)


def test_upgrade_from_0009_keeps_every_event_and_running_writers_go_on(
    pg_cluster: PgCluster, db_url: str
) -> None:
    assert migrate(db_url, upto="0009")[-1] == "0009"
    _provision(db_url)
    now = datetime.now(UTC)
    # Two writers sharing the cabinets, as ingest runs them.
    writer, other = _writer(db_url), _writer(db_url)
    try:
        # On 0009 the writers send jsonb's binary form (version byte, then the text).
        first = writer._commit(_events(range(1, 31), now))
        assert (first.new_events, first.dead) == (60, 0)
        assert other._commit(_events(range(31, 32), now)).new_events == 2
        # seq 31 is news to writer's remembered cursors: the COPY meets the key, and
        # the batch goes through the staging table.
        raced = writer._commit(_events(range(31, 36), now))
        assert (raced.new_events, raced.duplicates, raced.dead) == (8, 2, 0)
        with psycopg.connect(db_url, autocommit=True) as conn:
            for i, body in enumerate(ODD_BODIES):
                conn.execute(
                    "INSERT INTO events (cabinet, seq, ts, id, type, compartment, body)"
                    " VALUES ('cab-m1', %s, %s, %s, 'note', NULL, %s::jsonb)",
                    (1000 + i, T0, f"odd-{i}", body),
                )
            # A re-imaged cabinet: the same seq again with another ts is another event.
            conn.execute(
                "INSERT INTO events (cabinet, seq, ts, id, type, compartment, body)"
                " VALUES ('cab-m2', 1, %s, 'again-1', 'boot', NULL, '{\"v\": 1}')",
                (T0 + timedelta(hours=1),),
            )
        before = query(db_url, _ROWS)
        assert len(before) == 73
        chunks = "SELECT count(*) FROM show_chunks('events')"
        chunks_before = count(db_url, chunks) if pg_cluster.flavor == "timescaledb" else 0
        assert chunks_before == (4 if pg_cluster.flavor == "timescaledb" else 0)

        assert migrate(db_url, upto="0010") == ["0010"]

        assert query(db_url, _ROWS) == before
        assert query(
            db_url,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'events'::regclass AND attname = 'body'",
        ) == [("json",)]
        assert _indexes(db_url) == [
            "CREATE UNIQUE INDEX events_dedup ON public.events USING btree (cabinet, ts, seq)"
        ]
        if pg_cluster.flavor == "timescaledb":
            assert count(db_url, chunks) == chunks_before
            # Every chunk has the new key and only it.
            per_chunk = query(
                db_url,
                "SELECT c.relname, array_agg(pg_get_indexdef(i.indexrelid) ORDER BY 1)"
                " FROM show_chunks('events') s(chunk)"
                " JOIN pg_class c ON c.oid = s.chunk"
                " JOIN pg_index i ON i.indrelid = s.chunk GROUP BY c.relname",
            )
            assert len(per_chunk) == chunks_before
            for _, defs in per_chunk:
                assert len(defs) == 1, defs
                assert defs[0].endswith("(cabinet, ts, seq)"), defs

        # The writers, still thinking body is jsonb: their next batches (new events and
        # resends of old ones) fail once, are retried, and land whole.
        new = _events(range(36, 41), now)
        outcome = writer._commit_with_retry(new + _events(range(1, 6), now), None)
        assert outcome is not None
        assert (outcome.new_events, outcome.duplicates, outcome.dead) == (10, 10, 0)
        outcome = other._commit_with_retry(_events(range(41, 42), now), None)
        assert outcome is not None
        assert (outcome.new_events, outcome.dead) == (2, 0)
        # The staging table, too, has the new type.
        raced = writer._commit(_events(range(41, 43), now))
        assert (raced.new_events, raced.duplicates, raced.dead) == (2, 2, 0)
        assert raced.receipts == dict.fromkeys(CABINETS, 42)
        # A json body is the payload exactly as received.
        stored = dict(
            query(
                db_url,
                "SELECT cabinet || '/' || seq, body::text FROM events WHERE seq BETWEEN 36 AND 40",
            )
        )
        assert stored == {
            f"{i.topic.split('/')[1]}/{n}": i.payload.decode()
            for i, n in zip(new, [*range(36, 41), *range(36, 41)], strict=True)
        }
        # A fresh writer on the new schema stores the same; the key still refuses repeats.
        fresh = _writer(db_url)
        try:
            again = fresh._commit(_events(range(41, 51), now))
            assert (again.new_events, again.duplicates, again.dead) == (16, 4, 0)
        finally:
            fresh._drop_connection()
        assert count(db_url, "SELECT count(*) FROM events") == 103
        assert count(db_url, "SELECT count(*) FROM dead_letters") == 0
    finally:
        writer._drop_connection()
        other._drop_connection()


def _plan(conn: psycopg.Connection, **params: object) -> str:
    values: dict[str, object] = {
        "scope": [],
        "source": None,
        "site": None,
        "cabinet": None,
        "compartment": None,
        "type": None,
        "since": None,
        "until": None,
        "at": None,
        "id": None,
        "limit": 51,
    }
    values.update(params)
    statement = sql.SQL("EXPLAIN (COSTS OFF) ") + sql.SQL(_TRAIL).format(scope=sql.SQL("TRUE"))
    return "\n".join(r[0] for r in conn.execute(statement, values).fetchall())


@pytest.mark.parametrize(
    "params",
    [
        {"cabinet": "cab-007"},
        {"cabinet": "cab-007", "since": T0, "until": T0 + timedelta(hours=2)},
        {"site": "site-1", "since": T0, "until": T0 + timedelta(minutes=10)},
    ],
    ids=["cabinet", "cabinet-and-time", "site-and-time"],
)
def test_the_audit_trail_reaches_events_through_the_key(
    db_url: str, params: dict[str, object]
) -> None:
    migrate(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for s in range(4):
            create_site(conn, f"site-{s}", "Site")
        for i in range(40):
            create_cabinet(conn, f"cab-{i:03d}", f"site-{i % 4}", [CompartmentSpec("c1", "m")])
        # 24,000 events over two days, 600 per cabinet: a time range is a small part.
        conn.execute(
            "INSERT INTO events (cabinet, seq, ts, id, type, compartment, body)"
            " SELECT 'cab-' || lpad((g %% 40)::text, 3, '0'), g / 40 + 1,"
            "        %s::timestamptz - interval '1 day' + g * interval '7 seconds',"
            "        'e' || g, 'door_opened', 'c1', json_build_object('seq', g / 40 + 1)"
            " FROM generate_series(0, 23999) g",
            (T0,),
        )
        conn.execute("ANALYZE")
        plan = _plan(conn, **params)
    assert "Seq Scan on events" not in plan, plan
    assert "Seq Scan on _hyper" not in plan, plan
    conditions = [line for line in plan.splitlines() if "Index Cond" in line]
    assert any("cabinet =" in line for line in conditions), plan
    if "since" in params:
        assert any("ts >=" in line and "ts <" in line for line in conditions), plan
    assert "events_dedup" in plan, plan
