"""The unlock's fast paths: the API key cache (and its revocation bound), the NOTIFY
that carries a command's outcome, and the command created in one statement."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from flask import Flask

from smartlocker.cloud.api.auth import Role
from smartlocker.cloud.api.keycache import KeyCache
from smartlocker.cloud.api.ratelimit import RATE_LIMITED, PendingHit, window_start
from smartlocker.cloud.api.unlock import send_open
from smartlocker.cloud.api.waiter import CHANNEL, CommandWaiter, parse_note
from smartlocker.cloud.errors import NotFound
from smartlocker.cloud.rules.commands import create_command, record_outcome
from smartlocker.protocol import AckOutcome, new_message_id, utcnow

from .conftest import World, bearer, make_key

CACHE_S = 0.5


@pytest.fixture
def cached_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(pool_min=1, pool_max=2, key_cache_seconds=CACHE_S)


def _revoke(url: str, token: str) -> None:
    key_id = token.split("_")[1]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (key_id,))


def test_a_revoked_key_stops_working_within_the_cache_time(world: World, cached_app: Flask) -> None:
    c = cached_app.test_client()
    token = make_key(world.url, Role.VIEWER, ["s1"], "soon revoked")
    assert c.get("/api/v1/sites", headers=bearer(token)).status_code == 200
    _revoke(world.url, token)
    revoked_at = time.monotonic()
    # Within CACHE_S this worker may still accept it; never after.
    while True:
        status = c.get("/api/v1/sites", headers=bearer(token)).status_code
        elapsed = time.monotonic() - revoked_at
        if status == 401:
            break
        assert status == 200
        assert elapsed < CACHE_S, f"revoked key still accepted after {elapsed:.2f}s"
        time.sleep(0.05)
    assert elapsed <= CACHE_S + 0.2
    # and it stays refused
    time.sleep(CACHE_S)
    assert c.get("/api/v1/sites", headers=bearer(token)).status_code == 401


def test_a_cached_key_id_with_a_wrong_secret_is_refused(world: World, cached_app: Flask) -> None:
    c = cached_app.test_client()
    token = make_key(world.url, Role.VIEWER, ["s1"], "cached")
    assert c.get("/api/v1/sites", headers=bearer(token)).status_code == 200
    prefix, key_id, secret = token.split("_", 2)
    forged = f"{prefix}_{key_id}_{'A' * len(secret)}"
    assert c.get("/api/v1/sites", headers=bearer(forged)).status_code == 401
    assert c.get("/api/v1/sites", headers=bearer(token)).status_code == 200


def test_no_cache_means_revocation_is_immediate(world: World, make_app) -> None:
    c = make_app(pool_min=1, pool_max=2, key_cache_seconds=0).test_client()
    token = make_key(world.url, Role.VIEWER, ["s1"], "uncached")
    assert c.get("/api/v1/sites", headers=bearer(token)).status_code == 200
    _revoke(world.url, token)
    assert c.get("/api/v1/sites", headers=bearer(token)).status_code == 401


def test_key_cache_expires_and_is_bounded() -> None:
    now = [0.0]
    cache = KeyCache(2.0, max_entries=2, clock=lambda: now[0])
    cache.put("a", "h", "principal-a")  # type: ignore[arg-type]
    assert cache.get("a") == ("h", "principal-a")
    now[0] = 1.99
    assert cache.get("a") is not None
    now[0] = 2.0
    assert cache.get("a") is None
    cache.put("a", "h", "pa")  # type: ignore[arg-type]
    cache.put("b", "h", "pb")  # type: ignore[arg-type]
    cache.put("c", "h", "pc")  # type: ignore[arg-type]
    assert cache.get("c") is not None
    assert len(cache._entries) <= 2
    cache.forget("c")
    assert cache.get("c") is None
    assert KeyCache(0).get("x") is None


@pytest.mark.parametrize(
    ("payload", "key", "note"),
    [
        ("abc", "abc", None),
        ('{"id": "abc", "status": "succeeded"}', "abc", {"id": "abc", "status": "succeeded"}),
        ("{not json", "{not json", None),
        ('{"status": "failed"}', '{"status": "failed"}', None),
        ('["abc"]', '["abc"]', None),
    ],
)
def test_notification_payloads(payload: str, key: str, note: object) -> None:
    assert parse_note(payload) == (key, note)


def test_the_final_notify_carries_the_outcome(world: World) -> None:
    """Migration 0007: the trigger's payload is the outcome, sent on commit only."""
    now = utcnow()
    with (
        psycopg.connect(world.url, autocommit=True) as listener,
        psycopg.connect(world.url, autocommit=True) as conn,
    ):
        listener.execute(f"LISTEN {CHANNEL}")
        row = create_command(conn, "cab-1", "A1", reason="r", actor="t", now=now)
        with conn.transaction():
            done = record_outcome(
                conn, row.id, "cab-1", AckOutcome.NOT_OPENED, "door stuck", now=now
            )
            assert done is not None
        notes = [n.payload for n in listener.notifies(timeout=2.0, stop_after=1)]
    assert [json.loads(p) for p in notes] == [
        {"id": row.id, "status": "failed", "outcome": "not_opened", "outcome_reason": "door stuck"}
    ]


def test_a_waiter_gets_the_outcome_without_reading_again(world: World) -> None:
    waiter = CommandWaiter(world.url, recheck=30.0)
    now = utcnow()
    try:
        with psycopg.connect(world.url, autocommit=True) as conn:
            row = create_command(conn, "cab-1", "A1", reason="r", actor="t", now=now)
            reads: list[object] = []

            def check(note: object) -> object:
                reads.append(note)
                return note

            def ack() -> None:
                time.sleep(0.2)
                record_outcome(conn, row.id, "cab-1", AckOutcome.OPENED, None, now=now)

            acker = threading.Thread(target=ack)
            with waiter.watch(row.id) as watch:
                acker.start()
                got = watch.wait(check, 10.0)
            acker.join()
        # recheck is 30 s: only the notification can have woken it, with the outcome.
        assert got == {
            "id": row.id,
            "status": "succeeded",
            "outcome": "opened",
            "outcome_reason": None,
        }
    finally:
        waiter.close()


def test_a_command_is_created_in_one_statement_or_not_at_all(world: World) -> None:
    now = utcnow()
    with psycopg.connect(world.url, autocommit=True) as conn:
        before = conn.execute(
            "SELECT coalesce((SELECT counter FROM command_counters WHERE cabinet = 'cab-1'), 0)"
        ).fetchone()
        with pytest.raises(NotFound):
            create_command(conn, "cab-1", "NOPE", reason="r", actor="t", now=now)
        with pytest.raises(NotFound):
            create_command(conn, "no-such-cabinet", "A1", reason="r", actor="t", now=now)
        after = conn.execute(
            "SELECT coalesce((SELECT counter FROM command_counters WHERE cabinet = 'cab-1'), 0)"
        ).fetchone()
        assert after == before  # a refused command takes no counter
        first = create_command(conn, "cab-1", "A1", reason="r", actor="t", now=now)
        second = create_command(
            conn, "cab-1", "A1", reason="r", actor="t", now=now, command_id="chosen-id"
        )
        assert second.id == "chosen-id"
        assert second.counter == first.counter + 1
        assert first.counter == (before[0] if before else 0) + 1


def test_a_refused_unlock_counts_nothing_and_audits_nothing(
    world: World, make_app: Callable[..., Flask]
) -> None:
    c = make_app(pool_min=1, pool_max=2, unlocks_per_minute=3).test_client()
    headers = world.key("operator")
    base = "/api/v1/cabinets/cab-1/compartments"
    with psycopg.connect(world.url, autocommit=True) as conn:
        audits = conn.execute("SELECT count(*) FROM audit_log").fetchone()
        for _ in range(5):
            r = c.post(f"{base}/ZZ9/unlock", json={"reason": "nope"}, headers=headers)
            assert r.status_code == 404
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == audits
        assert conn.execute("SELECT count(*) FROM commands").fetchone() == (0,)
        codes = [
            c.post(f"{base}/A1/unlock", json={"reason": "yes"}, headers=headers).status_code
            for _ in range(4)
        ]
        assert codes == [202, 202, 202, 429]
        rows = conn.execute(
            "SELECT c.counter, a.detail->>'command' = c.id FROM commands c"
            " JOIN audit_log a ON a.detail->>'command' = c.id ORDER BY c.counter"
        ).fetchall()
        assert [r[1] for r in rows] == [True, True, True]
        assert [r[0] for r in rows] == sorted(r[0] for r in rows)
        # the over-limit request rolled back: no command, no audit row, no counter
        assert conn.execute("SELECT count(*) FROM commands").fetchone() == (3,)
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (audits[0] + 3,)


def test_the_first_unlock_of_a_window_forgets_the_old_windows_after_its_commit(
    world: World, make_app: Callable[..., Flask], clock
) -> None:
    from datetime import timedelta

    c = make_app(pool_min=1, pool_max=2, unlocks_per_minute=100).test_client()
    url = "/api/v1/cabinets/cab-1/compartments/A1/unlock"
    start = utcnow().replace(second=5, microsecond=0)
    clock.fixed = start
    for _ in range(2):
        assert (
            c.post(url, json={"reason": "window one"}, headers=world.key("operator")).status_code
            == 202
        )
    with psycopg.connect(world.url, autocommit=True) as conn:
        buckets = "SELECT window_start, hits FROM api_rate_limits WHERE bucket LIKE 'unlock:%'"
        assert [h for _, h in conn.execute(buckets).fetchall()] == [2]
        # a request of the old window still running holds its row: it is skipped, not awaited
        with conn.transaction():
            conn.execute("UPDATE api_rate_limits SET hits = hits WHERE bucket LIKE 'unlock:%'")
            clock.fixed = start + timedelta(minutes=1)
            r = c.post(url, json={"reason": "window two"}, headers=world.key("operator"))
            assert r.status_code == 202
        assert len(conn.execute(buckets).fetchall()) == 2  # the old one survived, locked
        clock.fixed = start + timedelta(minutes=2)
        assert (
            c.post(url, json={"reason": "window three"}, headers=world.key("operator")).status_code
            == 202
        )
        rows = conn.execute(buckets).fetchall()
        assert [(w, h) for w, h in rows] == [((start + timedelta(minutes=2)).replace(second=0), 1)]


def _open(
    conn: psycopg.Connection[Any],
    cabinet: str,
    compartment: str,
    sites: list[str] | None,
    limit: int,
    now: Any,
) -> tuple[Any, ...]:
    """The unlock's statement, as the API sends it; its one row."""
    window = timedelta(minutes=1)
    hit = PendingHit(conn, "unlock:refusal", window_start(now, window), window, now)
    row = send_open(
        conn,
        new_message_id(),
        cabinet,
        compartment,
        actor="t",
        sites=sites,
        purpose="operator",
        reason="r",
        parcel=None,
        now=now,
        hit=hit,
        limit=limit,
    ).fetchone()
    assert row is not None
    return tuple(row)


def _rollbacks(conn: psycopg.Connection[Any]) -> int:
    """Transactions of this database rolled back so far (an error aborts one), with
    ``conn``'s own flushed first (a backend reports its counts when idle, at most once
    a second unless told to)."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT 1")
    row = conn.execute(
        "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_unlock_statement_refuses_by_itself_without_an_error_and_leaves_nothing(
    world: World,
) -> None:
    """Past the limit, or with no compartment within the sites given, the unlock's one
    statement writes nothing (no count, no audit, no counter, no command) and says why
    in its row: no error, so PostgreSQL logs nothing and aborts no transaction."""
    now = utcnow()
    with psycopg.connect(world.url, autocommit=True) as conn:
        counter = (
            "SELECT coalesce((SELECT counter FROM command_counters WHERE cabinet = 'cab-1'), 0)"
        )
        audits = "SELECT count(*) FROM audit_log WHERE actor = 't'"
        hits = "SELECT hits FROM api_rate_limits WHERE bucket = 'unlock:refusal'"
        before = conn.execute(counter).fetchone()
        assert before is not None
        rollbacks = _rollbacks(conn)
        # the limit: two pass (each with its command and count), the rest are refused
        for expected_hits in (1, 2):
            *columns, count, over = _open(conn, "cab-1", "A1", None, 2, now)
            assert columns[0] is not None
            assert (count, over) == (expected_hits, False)
        for _ in range(3):
            *columns, count, over = _open(conn, "cab-1", "A1", None, 2, now)
            assert columns[0] is None
            assert (count, over) == (None, True)
        assert conn.execute(hits).fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM commands").fetchone() == (2,)
        assert conn.execute(audits).fetchone() == (2,)
        # past the limit even a missing compartment is "over" (429 before 404)
        assert _open(conn, "cab-1", "NOPE", None, 2, now)[-2:] == (None, True)
        # the compartment: missing, or in a cabinet outside the sites given
        for cabinet, compartment, sites in (
            ("cab-1", "NOPE", None),
            ("cab-1", "A1", ["s2"]),
            ("no-such-cabinet", "A1", None),
        ):
            *columns, count, over = _open(conn, cabinet, compartment, sites, 100, now)
            assert columns[0] is None
            assert (count, over) == (None, False)
        assert conn.execute(counter).fetchone() == (before[0] + 2,)
        assert conn.execute("SELECT count(*) FROM commands").fetchone() == (2,)
        assert conn.execute(audits).fetchone() == (2,)
        assert conn.execute(hits).fetchone() == (2,)
        # within its site it is created, in the same single round trip
        assert _open(conn, "cab-1", "A1", ["s1"], 100, now)[-2:] == (3, False)
        assert conn.execute(counter).fetchone() == (before[0] + 3,)
        assert conn.execute(audits).fetchone() == (3,)
        assert conn.execute(hits).fetchone() == (3,)
        assert _rollbacks(conn) == rollbacks


def test_an_unlock_that_races_past_the_limit_is_refused_by_its_count(world: World) -> None:
    """The gate reads the committed count without a lock; a request that passes it while
    another takes the window's last hit is refused by its own count (``SL429``), which
    aborts the statement: still nothing of it stays."""
    now = utcnow()
    start = window_start(now, timedelta(minutes=1))
    with (
        psycopg.connect(world.url, autocommit=True) as conn,
        psycopg.connect(world.url, autocommit=True) as other,
    ):
        _open(conn, "cab-1", "A1", None, 2, now)  # one hit of two
        commands = conn.execute("SELECT count(*) FROM commands").fetchone()
        # another request takes the last hit and has not committed yet
        other.execute("BEGIN")
        other.execute(
            "UPDATE api_rate_limits SET hits = hits + 1"
            " WHERE bucket = 'unlock:refusal' AND window_start = %s",
            (start,),
        )
        outcome: list[BaseException | tuple[Any, ...]] = []

        def racing() -> None:
            try:
                outcome.append(_open(conn, "cab-1", "A1", None, 2, now))
            except psycopg.Error as exc:
                outcome.append(exc)

        thread = threading.Thread(target=racing)
        thread.start()
        time.sleep(0.5)  # past the gate (1 < 2), now waiting for the count's row
        assert not outcome
        other.execute("COMMIT")
        thread.join(10)
        (result,) = outcome
        assert isinstance(result, psycopg.Error)
        assert result.sqlstate == RATE_LIMITED
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM commands").fetchone() == commands
        assert conn.execute(
            "SELECT hits FROM api_rate_limits WHERE bucket = 'unlock:refusal'"
        ).fetchone() == (2,)


def test_an_unlock_outside_the_keys_sites_is_no_cabinet_and_leaves_nothing(
    world: World, make_app: Callable[..., Flask]
) -> None:
    c = make_app(pool_min=1, pool_max=2, unlocks_per_minute=100).test_client()
    with psycopg.connect(world.url, autocommit=True) as conn:
        audits = conn.execute("SELECT count(*) FROM audit_log").fetchone()
        for url in (
            "/api/v1/cabinets/cab-2/compartments/A1/unlock",  # site s2's cabinet
            "/api/v1/cabinets/nowhere/compartments/A1/unlock",
        ):
            r = c.post(url, json={"reason": "not mine"}, headers=world.key("operator", "s1"))
            assert r.status_code == 404, r.json
            assert "no cabinet" in (r.json or {})["detail"]
        r = c.post(
            "/api/v1/cabinets/cab-1/compartments/ZZ/unlock",
            json={"reason": "no such door"},
            headers=world.key("operator", "s1"),
        )
        assert r.status_code == 404
        assert "no compartment ZZ" in (r.json or {})["detail"]
        assert conn.execute("SELECT count(*) FROM commands").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == audits
        assert conn.execute(
            "SELECT coalesce(sum(hits), 0) FROM api_rate_limits WHERE bucket LIKE 'unlock:%'"
        ).fetchone() == (0,)
        # the same key opens its own site's cabinet
        r = c.post(
            "/api/v1/cabinets/cab-1/compartments/A1/unlock",
            json={"reason": "mine"},
            headers=world.key("operator", "s1"),
        )
        assert r.status_code == 202, r.json


def test_creating_a_command_does_not_wait_for_ingest_holding_the_cabinet_row(
    world: World,
) -> None:
    """Ingest keeps a cabinet's row locked from its presence update until its batch
    commits; the command's counter lives elsewhere (migration 0012), so an unlock
    does not queue behind that transaction."""
    with (
        psycopg.connect(world.url, autocommit=True) as ingest,
        psycopg.connect(world.url, autocommit=True) as api,
    ):
        with ingest.transaction():
            ingest.execute("UPDATE cabinets SET last_seen = now() WHERE id = 'cab-1'")
            api.execute("SET lock_timeout = '2s'")
            started = time.monotonic()
            row = create_command(api, "cab-1", "A1", reason="r", actor="t", now=utcnow())
            assert time.monotonic() - started < 1.0
        assert api.execute(
            "SELECT counter FROM command_counters WHERE cabinet = 'cab-1'"
        ).fetchone() == (row.counter,)


def test_an_unlock_waiting_for_its_cabinet_does_not_hold_up_the_keys_other_unlocks(
    world: World, make_app: Callable[..., Flask]
) -> None:
    """Every unlock of a key updates the key's one rate-limit row: it is counted last in
    the transaction, so that row stays locked only until the COMMIT, not while the
    command waits (here for another transaction holding its cabinet's counter)."""
    c = make_app(pool_min=2, pool_max=4, unlocks_per_minute=100).test_client()
    answers: dict[str, int] = {}

    def unlock(cabinet: str) -> None:
        r = c.post(
            f"/api/v1/cabinets/{cabinet}/compartments/A1/unlock",
            json={"reason": "held up?"},
            headers=world.as_admin(),
        )
        answers[cabinet] = r.status_code

    unlock("cab-1")  # the counter row exists, and the key's window row
    assert answers["cab-1"] == 202
    with (
        psycopg.connect(world.url, autocommit=True) as holder,
        psycopg.connect(world.url, autocommit=True) as observer,  # fresh activity snapshots
    ):
        with holder.transaction():
            holder.execute("SELECT * FROM command_counters WHERE cabinet = 'cab-1' FOR UPDATE")
            stuck = threading.Thread(target=unlock, args=("cab-1",))
            stuck.start()
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%command_counters%'"
            )
            deadline = time.monotonic() + 10
            while observer.execute(waiting).fetchone() != (1,):
                assert time.monotonic() < deadline, f"the unlock never waited: {answers}"
                time.sleep(0.01)
            other = threading.Thread(target=unlock, args=("cab-2",))  # same key
            other.start()
            other.join(2.0)
            held_up = other.is_alive()
            still_stuck = stuck.is_alive()
        # (the holder lets go here, whatever happened: no thread is left waiting)
        other.join(10)
        stuck.join(10)
    assert not held_up, "the key's other unlock waited for the stuck one"
    assert still_stuck  # the first one really was waiting for its counter
    assert answers == {"cab-1": 202, "cab-2": 202}
    with psycopg.connect(world.url) as conn:
        assert conn.execute(
            "SELECT sum(hits) FROM api_rate_limits WHERE bucket LIKE 'unlock:%'"
        ).fetchone() == (3,)


def test_an_awaited_unlock_is_marked_sent_only_if_its_wait_ends_without_the_outcome(
    world: World, make_app: Callable[..., Flask]
) -> None:
    """Not awaited: `sent` at the PUBACK. Awaited: the ack's update does not queue behind
    a `sent` commit of the same row; `sent` is written only when the wait runs out."""
    c = make_app(pool_min=2, pool_max=4, unlocks_per_minute=100).test_client()
    base = "/api/v1/cabinets/cab-1/compartments/A1/unlock"

    def row(command: str) -> tuple[Any, ...]:
        with psycopg.connect(world.url) as conn:
            found = conn.execute(
                "SELECT status, sent_at IS NOT NULL AND sent_at >= created_at"
                " FROM commands WHERE id = %s",
                (command,),
            ).fetchone()
        assert found is not None
        return tuple(found)

    r = c.post(base, json={"reason": "no wait"}, headers=world.as_admin())
    assert (r.status_code, (r.json or {})["status"]) == (202, "sent")
    assert row(r.json["id"]) == ("sent", True)

    r = c.post(base + "?wait=0.3", json={"reason": "nobody answers"}, headers=world.as_admin())
    assert (r.status_code, (r.json or {})["status"]) == (202, "sent")
    assert row(r.json["id"]) == ("sent", True)

    def ack() -> None:  # ingest's part, as soon as the command exists
        with psycopg.connect(world.url, autocommit=True) as conn:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                found = conn.execute("SELECT id FROM commands WHERE reason = 'answered'").fetchone()
                if found is not None:
                    record_outcome(conn, found[0], "cab-1", AckOutcome.OPENED, None, now=utcnow())
                    return
                time.sleep(0.005)

    acker = threading.Thread(target=ack)
    acker.start()
    r = c.post(base + "?wait=10", json={"reason": "answered"}, headers=world.as_admin())
    acker.join()
    assert (r.status_code, (r.json or {})["status"]) == (200, "succeeded")
    assert row(r.json["id"]) == ("succeeded", False)  # created → succeeded
