"""A command is found by its id through the primary key, even before ``commands`` has
statistics.

An ack (:meth:`Reactions.on_lane_acks`) and an ``unlocked`` event
(:meth:`Reactions.on_events`) look their command up by id and cabinet. psycopg prepares
a statement after its fifth use, and PostgreSQL may then keep a generic plan. In a new
database, or one whose autovacuum has not analysed ``commands`` yet, nothing tells the
planner how many commands a cabinet has: it costed an index on ``(cabinet, counter)``
the same as the primary key and took it, and every lookup read all of its cabinet's
commands (about a thousand rows a cabinet after a minute of ``smartlocker bench unlock``).
The real statements run here prepared, with generic plans forced; auto_explain sends
their plans back as notices.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from smartlocker.cloud.db import migrate
from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.reactions import Reactions
from smartlocker.cloud.rules.fleet import create_cabinet, create_site
from smartlocker.protocol import Ack, AckOutcome, Unlocked, UnlockSource
from tests.cloud.conftest import LAYOUT, T0
from tests.support.pg import PgCluster

#: Commands of the cabinet already in the table: a scan of them shows in the plan.
_COMMANDS = 500


@pytest.fixture
def unanalysed(pg_cluster: PgCluster) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A new database whose ``commands`` has rows but no statistics (as in its first
    minute), with the plans of generic prepared statements sent as notices."""
    url = pg_cluster.create_database()
    try:
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            # Autovacuum must not analyse the table while the test runs.
            conn.execute("ALTER TABLE commands SET (autovacuum_enabled = false)")
            create_site(conn, "site-1", "Main street")
            create_cabinet(conn, "cab-1", "site-1", LAYOUT)
            conn.execute(
                "INSERT INTO commands (id, cabinet, compartment, counter, actor,"
                " created_at, expires_at)"
                " SELECT 'old-' || n, 'cab-1', 'A1', n, 'test', %s, %s"
                " FROM generate_series(1, %s) AS n",
                (T0, T0 + timedelta(seconds=30), _COMMANDS),
            )
            conn.execute(
                "INSERT INTO commands (id, cabinet, compartment, counter, actor,"
                " created_at, expires_at) VALUES"
                " ('acked', 'cab-1', 'A2', %s, 'test', %s, %s),"
                " ('granted', 'cab-1', 'B1', %s, 'test', %s, %s)",
                (
                    _COMMANDS + 1,
                    T0,
                    T0 + timedelta(seconds=30),
                    _COMMANDS + 2,
                    T0,
                    T0 + timedelta(seconds=30),
                ),
            )
            row = conn.execute(
                "SELECT reltuples FROM pg_class WHERE relname = 'commands'"
            ).fetchone()
            assert row == (-1,), "commands was analysed: the test would show nothing"
            conn.prepare_threshold = 0
            conn.execute("LOAD 'auto_explain'")
            conn.execute("SET auto_explain.log_min_duration = 0")
            conn.execute("SET auto_explain.log_level = 'notice'")
            conn.execute("SET plan_cache_mode = force_generic_plan")
            yield conn
    finally:
        pg_cluster.drop_database(url)


def test_command_lookups_use_the_primary_key_without_statistics(
    unanalysed: psycopg.Connection[tuple[object, ...]], keys: CloudKeys
) -> None:
    conn = unanalysed
    plans: list[str] = []
    conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    reactions = Reactions(keys)
    at = T0 + timedelta(seconds=1)

    with conn.transaction():
        reactions.on_lane_acks(
            conn,
            [
                Ack(
                    ts=at,
                    cabinet="cab-1",
                    command_id="acked",
                    compartment="A2",
                    outcome=AckOutcome.OPENED,
                )
            ],
            at,
        )
    with conn.transaction():
        reactions.on_events(
            conn,
            [
                Unlocked(
                    cabinet="cab-1",
                    seq=1,
                    ts=at,
                    compartment="B1",
                    source=UnlockSource.COMMAND,
                    command_id="granted",
                    pulse_ms=300,
                )
            ],
            at,
        )

    status = conn.execute("SELECT status FROM commands WHERE id = 'acked'").fetchone()
    grant = conn.execute(
        "SELECT lock, grant_kind FROM compartments WHERE cabinet = 'cab-1' AND id = 'B1'"
    ).fetchone()
    assert (status, grant) == (("succeeded",), ("unlocked", "operator"))
    lookups = {
        "ack": [p for p in plans if "UPDATE commands SET status" in p],
        "unlocked": [p for p in plans if "JOIN commands cmd" in p],
    }
    for what, found in lookups.items():
        assert len(found) == 1, f"{what}: {len(found)} plans among {len(plans)} notices"
        assert "using commands_pkey" in found[0], f"{what}:\n{found[0]}"
