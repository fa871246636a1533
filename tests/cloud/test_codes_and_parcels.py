"""Codes (keyed hashes only, unique per cabinet) and the parcel operations around them."""

from __future__ import annotations

import logging
from datetime import timedelta

import psycopg
import pytest
from click.testing import CliRunner

from smartlocker.cli import main
from smartlocker.cloud.db import report_edition
from smartlocker.cloud.errors import InvalidTransition, ValidationFailed
from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.rules import codes as codes_module
from smartlocker.cloud.rules import (
    expire_overdue,
    extend_deadline,
    issue_code,
    record_deposit,
    record_pickup,
    resend_pickup_code,
    reserve_parcel,
)
from smartlocker.protocol import hash_code
from tests.cloud.conftest import T0
from tests.support.outbox import queued_codes
from tests.support.pg import PgCluster

Conn = psycopg.Connection[tuple[object, ...]]


def active_codes(conn: Conn, parcel: str) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT kind, hash, valid_until FROM codes WHERE parcel = %s"
        " AND used_at IS NULL AND revoked_at IS NULL ORDER BY id",
        (parcel,),
    ).fetchall()


def test_only_the_keyed_hash_is_stored(conn: Conn, keys: CloudKeys) -> None:
    r = reserve_parcel(conn, keys, size="s", cabinet="cab-1", actor="t", now=T0)
    assert len(r.deposit_code) >= 8
    assert r.deposit_code.isdigit()
    ((kind, digest, until),) = active_codes(conn, r.parcel)
    assert kind == "deposit"
    assert digest == hash_code(keys.code_key("cab-1"), r.deposit_code)
    assert until == T0 + timedelta(hours=48)  # the site's reservation_hours
    dump = "".join(str(row) for row in conn.execute("SELECT * FROM codes").fetchall())
    assert r.deposit_code not in dump


def test_a_colliding_code_is_drawn_again(
    conn: Conn, keys: CloudKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = reserve_parcel(conn, keys, size="s", cabinet="cab-1", actor="t", now=T0)
    draws = iter([first.deposit_code, first.deposit_code, "12345678"])
    monkeypatch.setattr(codes_module, "generate_code", lambda digits: next(draws))
    second = reserve_parcel(conn, keys, size="s", cabinet="cab-1", actor="t", now=T0)
    assert second.deposit_code == "12345678"


def test_resend_revokes_the_old_pickup_code(conn: Conn, keys: CloudKeys) -> None:
    r = reserve_parcel(
        conn, keys, size="m", cabinet="cab-1", actor="t", now=T0, recipient="+4912345"
    )
    record_deposit(conn, keys, r.parcel, now=T0, actor="t")
    (old,) = active_codes(conn, r.parcel)
    resend_pickup_code(conn, keys, r.parcel, now=T0 + timedelta(hours=1), actor="support")
    (new,) = active_codes(conn, r.parcel)
    assert new[1] != old[1]
    assert new[2] == old[2]  # same deadline
    codes = [q.code for q in queued_codes(conn, r.parcel)]
    assert len(codes) == 2
    assert codes[0] != codes[1]
    with pytest.raises(ValueError, match="kind"):
        issue_code(conn, keys, r.parcel, "master", valid_until=T0, now=T0)


def test_an_explicit_deadline_and_its_extension(conn: Conn, keys: CloudKeys) -> None:
    deadline = T0 + timedelta(hours=10)
    r = reserve_parcel(conn, keys, size="s", cabinet="cab-1", actor="t", now=T0, deadline=deadline)
    assert r.deposit_code_valid_until == deadline
    record_deposit(conn, keys, r.parcel, now=T0 + timedelta(hours=1), actor="t")
    assert active_codes(conn, r.parcel)[0][2] == deadline
    later = T0 + timedelta(days=3)
    extend_deadline(conn, r.parcel, later, now=T0 + timedelta(hours=2), actor="support")
    assert active_codes(conn, r.parcel)[0][2] == later
    assert expire_overdue(conn, T0 + timedelta(days=2)) == []
    (expired,) = expire_overdue(conn, later)
    assert expired.to_state == "expired"
    assert active_codes(conn, r.parcel) == []
    with pytest.raises(ValidationFailed):
        extend_deadline(conn, r.parcel, later + timedelta(days=1), now=later, actor="support")
    with pytest.raises(InvalidTransition):
        record_pickup(conn, r.parcel, now=later, actor="t")


def test_sending_from_a_locker_uses_the_same_lifecycle(conn: Conn, keys: CloudKeys) -> None:
    r = reserve_parcel(
        conn, keys, size="s", cabinet="cab-1", actor="customer", now=T0, direction="outbound"
    )
    record_deposit(conn, keys, r.parcel, now=T0, actor="cabinet:cab-1")  # the customer drops it
    record_pickup(conn, r.parcel, now=T0 + timedelta(hours=3), actor="courier-9")
    row = conn.execute("SELECT direction, state FROM parcels WHERE id = %s", (r.parcel,))
    assert row.fetchone() == ("outbound", "picked_up")
    with pytest.raises(ValidationFailed):
        reserve_parcel(conn, keys, size="s", cabinet="cab-1", actor="c", now=T0, direction="up")


def test_start_up_says_which_edition_and_what_it_uses(
    pg_cluster: PgCluster, core_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO), psycopg.connect(core_url) as conn:
        edition = report_edition(conn)
    assert f"storage edition: {edition.value}, using" in caplog.text
    assert ("hypertables" in caplog.text) == (pg_cluster.flavor == "timescaledb")
    result = CliRunner().invoke(main, ["db", "migrate"], env={"SMARTLOCKER_DATABASE_URL": core_url})
    assert result.exit_code == 0, result.output
    assert "applied 0 migration(s)" in result.output
    assert f"storage edition: {edition.value}, using {edition.uses}" in result.output
