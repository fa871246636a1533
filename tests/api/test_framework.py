"""The API's framework: health, problem+json, the spec, keys, cursors, rate limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from smartlocker.cli import main
from smartlocker.cloud.api import ApiSettings, create_app
from smartlocker.cloud.api.auth import hash_secret, parse_key
from smartlocker.cloud.api.errors import RateLimited, Unauthorized, ValidationFailed
from smartlocker.cloud.api.pagination import decode_cursor, encode_cursor
from smartlocker.cloud.api.ratelimit import (
    RATE_LIMITED,
    CodeThrottle,
    PendingHit,
    count_params,
    count_statement,
    lockout_for,
    window_start,
)

PROBLEM = "application/problem+json"


def test_healthz_and_readyz(client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.json
    assert ready.json["checks"] == {"database": "ok", "migrations": "ok", "mqtt": "ok"}


def test_readyz_says_which_migrations_are_missing(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY, name text)")
    app = create_app(ApiSettings(database_url=db_url, pool_min=1, pool_max=2))
    try:
        ready = app.test_client().get("/readyz")
    finally:
        app.extensions["smartlocker"].close()
    assert ready.status_code == 503
    assert ready.json["status"] == "not_ready"
    assert ready.json["checks"]["migrations"].startswith("missing: 0001")


def test_unknown_paths_and_methods_are_problems(client: FlaskClient) -> None:
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.content_type == PROBLEM
    assert missing.json["type"] == "https://smartlocker.dev/problems/not-found"
    assert missing.json["status"] == 404
    wrong = client.delete("/healthz")
    assert wrong.status_code == 405
    assert wrong.content_type == PROBLEM
    assert "GET" in wrong.headers["Allow"]


def test_openapi_is_served_and_lists_problem_responses(client: FlaskClient) -> None:
    spec = client.get("/api/v1/openapi.json").json
    assert spec["openapi"].startswith("3.1")
    assert "Problem" in spec["components"]["schemas"]
    assert "/readyz" in spec["paths"]


def test_metrics_count_requests(client: FlaskClient) -> None:
    client.get("/healthz")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'smartlocker_api_requests_total{endpoint="/healthz",method="GET",status="200"}' in text


def test_apikey_cli_prints_the_key_once_and_stores_its_hash(api_db: str) -> None:
    result = CliRunner().invoke(
        main,
        ["apikey", "create", "--role", "operator", "--site", "s1", "--name", "shop"],
        env={"SMARTLOCKER_DATABASE_URL": api_db},
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    key_id, secret = parse_key(token)
    with psycopg.connect(api_db) as conn:
        row = conn.execute(
            "SELECT role, sites, secret_hash FROM api_keys WHERE id = %s", (key_id,)
        ).fetchone()
    assert row is not None
    assert row[0] == "operator"
    assert row[1] == ["s1"]
    assert row[2] == hash_secret(secret)
    assert secret not in row[2]


@pytest.mark.parametrize(
    "token", ["", "slk_x_y", "slk_0123456789abcdef_short", "Bearer", "slk_" + "a" * 80]
)
def test_malformed_keys_are_refused(token: str) -> None:
    with pytest.raises(Unauthorized):
        parse_key(token)


def test_cursor_round_trip_and_tampering() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    cursor = encode_cursor([when, "p-1"])
    assert decode_cursor(cursor, [datetime, str]) == [when, "p-1"]
    for bad in ["!!", "e30", encode_cursor([1, 2]), encode_cursor(["2026-01-01T00:00:00", "x"])]:
        with pytest.raises(ValidationFailed):
            decode_cursor(bad, [datetime, str])


def count_request(
    conn: psycopg.Connection[Any], bucket: str, *, limit: int, window: timedelta, now: datetime
) -> int:
    """One request counted with the upsert the unlock's statement embeds, read as it
    reads it; past ``limit`` the database refuses and nothing is counted."""
    pending = PendingHit(conn, bucket, window_start(now, window), window, now)
    try:
        row = conn.execute(
            count_statement("VALUES (%(bucket)s, %(window_start)s, 1)"),
            count_params(pending, limit),
        ).fetchone()
    except psycopg.Error as exc:
        if exc.sqlstate == RATE_LIMITED:
            raise pending.exceeded(limit) from None
        raise
    assert row is not None
    pending.read(row[0])
    pending.forget_old_windows()
    return pending.hits()


def test_fixed_window_rate_limit_is_shared_through_the_database(api_db: str) -> None:
    now = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    with (
        psycopg.connect(api_db, autocommit=True) as a,
        psycopg.connect(api_db, autocommit=True) as b,
    ):
        minute = timedelta(minutes=1)
        counts = [
            count_request(a if i % 2 else b, "unlock:k1", limit=4, window=minute, now=now)
            for i in range(4)
        ]
        assert counts == [1, 2, 3, 4]
        with pytest.raises(RateLimited) as exc:
            count_request(a, "unlock:k1", limit=4, window=minute, now=now)
        assert exc.value.retry_after == 51
        # the refused request counted nothing
        assert a.execute("SELECT hits FROM api_rate_limits").fetchone() == (4,)
        # the next window starts afresh and forgets the old one
        later = now + minute
        assert count_request(b, "unlock:k1", limit=4, window=minute, now=later) == 1
        assert a.execute("SELECT count(*) FROM api_rate_limits").fetchone() == (1,)


def test_code_lockout_grows_and_clears(api_db: str) -> None:
    assert [lockout_for(n, 3) for n in (1, 2)] == [None, None]
    assert [lockout_for(n, 3).total_seconds() for n in (3, 4, 5, 20)] == [30, 60, 120, 3600]
    throttle = CodeThrottle(free_attempts=3)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    subjects = ["parcel:p1", "key:k1"]
    with psycopg.connect(api_db, autocommit=True) as conn:
        for _ in range(2):
            throttle.check(conn, subjects, now)
            throttle.failed(conn, subjects, now)
        throttle.check(conn, subjects, now)
        throttle.failed(conn, subjects, now)  # the third wrong code locks for 30 s
        with pytest.raises(RateLimited) as exc:
            throttle.check(conn, ["parcel:p1"], now + timedelta(seconds=10))
        assert exc.value.slug == "code-throttled"
        assert exc.value.retry_after == 21
        throttle.check(conn, subjects, now + timedelta(seconds=31))
        throttle.failed(conn, subjects, now + timedelta(seconds=31))  # 4th: 60 s
        with pytest.raises(RateLimited) as exc:
            throttle.check(conn, subjects, now + timedelta(seconds=32))
        assert exc.value.retry_after == 60
        # a right code ends the run (the running lockout stays) …
        throttle.succeeded(conn, subjects)
        later = now + timedelta(seconds=100)
        throttle.failed(conn, subjects, later)
        throttle.check(conn, subjects, later)
        # … and so does a quarter of an hour without a wrong code
        for _ in range(2):
            throttle.failed(conn, subjects, later)
        much_later = later + timedelta(minutes=16)
        throttle.failed(conn, subjects, much_later)
        throttle.check(conn, subjects, much_later)
