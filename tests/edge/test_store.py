"""The agent's database: durable settings, persistent seq, receipts, telemetry bound."""

from __future__ import annotations

import sqlite3

import pytest
from gpiozero.pins.mock import MockFactory

from smartlocker.edge_agent import Cabinet, Store, parse_config
from smartlocker.protocol import Receipt, encode, load_public_key
from tests.edge.conftest import config_dict


def test_pragmas_seq_and_receipts(tmp_path) -> None:
    path = tmp_path / "agent.sqlite3"
    store = Store(path)
    try:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        for _ in range(3):
            store.append_event(lambda seq: (seq, b"e%d" % seq))
    finally:
        store.close()
    store = Store(path)  # reopened: seq continues
    try:
        assert store.append_event(lambda seq: (seq, b"x")) == 4
        assert store.receipt(2) == 2
        assert [s for s, _ in store.pending_events(0, 10)] == [3, 4]
        assert store.first_unreceipted() == 3
        assert store.last_seq == 4
    finally:
        store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def test_a_failed_build_gives_out_no_seq(tmp_path) -> None:
    store = Store(tmp_path / "agent.sqlite3")

    def broken(seq: int) -> tuple[int, bytes]:
        raise ValueError("model refused")

    try:
        with pytest.raises(ValueError, match="model refused"):
            store.append_event(broken)
        assert store.append_event(lambda seq: (seq, b"ok")) == 1
    finally:
        store.close()


def test_telemetry_is_bounded_events_are_not(tmp_path) -> None:
    store = Store(tmp_path / "agent.sqlite3")
    try:
        for i in range(50):
            store.add_telemetry(b"t%d" % i, keep=10)
            store.append_event(lambda seq: (seq, b"e"))
        assert [p for _, p in store.pending_telemetry()] == [b"t%d" % i for i in range(40, 50)]
        assert store.outbox_depth() == 50
    finally:
        store.close()


def test_receipts_never_drop_unsent_events(tmp_path, public_key_file) -> None:
    config = parse_config(
        config_dict(tmp_path / "data", public_key_file, "mqtt://127.0.0.1:1", cabinet="cab-a")
    )
    store = Store(config.database_path)
    factory = MockFactory()
    cabinet = Cabinet(
        config, store, public_key=load_public_key(public_key_file), pin_factory=factory
    )
    try:
        cabinet.open()
        stale = encode(Receipt(cabinet="cab-a", upto_seq=1000))
        cabinet.handle_receipt(stale)
        assert store.outbox_depth() == 1  # boot: never published, so kept
        cabinet.published_upto = 1
        cabinet.handle_receipt(stale)
        assert store.outbox_depth() == 0
        cabinet.handle_receipt(encode(Receipt(cabinet="cab-b", upto_seq=1)))
    finally:
        cabinet.close()
        store.close()
        factory.reset()


def test_used_codes_are_forgotten_once_revoked(tmp_path) -> None:
    store = Store(tmp_path / "agent.sqlite3")
    try:
        store.use_code("a" * 64, 1.0)
        store.use_code("b" * 64, 1.0)
        assert store.forget_used_codes({"a" * 64}) == 1
        assert store.code_used("a" * 64)
        assert not store.code_used("b" * 64)
    finally:
        store.close()
