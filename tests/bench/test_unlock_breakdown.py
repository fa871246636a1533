"""The unlock benchmark's leg breakdown, from the commands' and events' own rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from smartlocker.bench.unlock_bench import _BREAKDOWN, _breakdown
from tests.ingest.harness import provision

T0 = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


def _ms(n: float) -> datetime:
    return T0 + timedelta(milliseconds=n)


def _command(
    conn: psycopg.Connection[Any],
    command: str,
    created: float,
    sent: float | None,
    finished: float,
    status: str = "succeeded",
) -> None:
    conn.execute(
        "INSERT INTO commands (id, cabinet, compartment, counter, actor, status,"
        " created_at, expires_at, sent_at, finished_at)"
        " VALUES (%s, 'cab-b', 'c1', 1 + (SELECT count(*) FROM commands), 'bench', %s,"
        " %s, %s, %s, %s)",
        (
            command,
            status,
            _ms(created),
            _ms(created + 30_000),
            None if sent is None else _ms(sent),
            _ms(finished),
        ),
    )


def _event(
    conn: psycopg.Connection[Any], seq: int, at: float, kind: str, command: str | None
) -> None:
    body: dict[str, Any] = {"type": kind, "seq": seq, "compartment": "c1"}
    if command is not None:
        body["command_id"] = command
    conn.execute(
        "INSERT INTO events (cabinet, seq, ts, id, type, compartment, body)"
        " VALUES ('cab-b', %s, %s, %s, %s, 'c1', %s)",
        (seq, _ms(at), f"e{seq}", kind, json.dumps(body)),
    )


def test_the_breakdown_takes_each_commands_first_pulse_in_one_pass(db_url: str) -> None:
    provision(db_url, ["cab-b"])
    with psycopg.connect(db_url, autocommit=True) as conn:
        _command(conn, "k0", 0, 500, 900)  # older than the last three: left out
        _command(conn, "k1", 1000, 1010, 1040)
        _command(conn, "k2", 2000, 2020, 2070)
        # awaited (never marked sent), no pulse: only in the legs without either
        _command(conn, "k3", 3000, None, 3090)
        _command(conn, "k4", 3500, 3501, 3502, status="failed")  # not succeeded: left out
        _event(conn, 1, 1030, "unlocked", "k1")
        _event(conn, 2, 1035, "unlocked", "k1")  # a second pulse: the first one counts
        _event(conn, 3, 1001, "door_opened", "k1")  # not a pulse
        _event(conn, 4, 2050, "unlocked", "k2")
        _event(conn, 5, 2060, "unlocked", None)  # an unlock by code
        _event(conn, 6, 700, "unlocked", "k0")
        _event(conn, 7, 3502, "unlocked", "k4")
        # created→sent 10, 20; created→pulse 30, 50; pulse→final 10, 20;
        # created→final 40, 70, 90.
        assert _breakdown(db_url, 3) == {
            "created_to_sent": 15.0,
            "created_to_pulse": 40.0,
            "pulse_to_final": 15.0,
            "created_to_final": 70.0,
        }
        # One pass over the events: no subquery run once per command.
        ((plan,),) = conn.execute("EXPLAIN (FORMAT JSON) " + _BREAKDOWN, (3,)).fetchall()
        assert "SubPlan" not in json.dumps(plan)
