"""The agent's database: durable settings, persistent seq, receipts, telemetry bound."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from smartlocker.edge_agent import Cabinet, Store, parse_config
from smartlocker.edge_agent import store as store_module
from smartlocker.protocol import REPLAY_WINDOW, Receipt, encode, load_public_key
from tests.edge.conftest import config_dict


def _committed(path: Any, sql: str) -> list[tuple[Any, ...]]:
    """What another connection reads (only what the store committed)."""
    with closing(sqlite3.connect(path)) as other:
        return other.execute(sql).fetchall()


def _offline_cabinet(tmp_path: Any, public_key_file: Any) -> tuple[Cabinet, Store, MockFactory]:
    """Cabinet ``cab-a`` on mock pins with its store, and no broker to reach."""
    config = parse_config(
        config_dict(tmp_path / "data", public_key_file, "mqtt://127.0.0.1:1", cabinet="cab-a")
    )
    store = Store(config.database_path)
    factory = MockFactory()
    cabinet = Cabinet(
        config, store, public_key=load_public_key(public_key_file), pin_factory=factory
    )
    return cabinet, store, factory


def test_pragmas_seq_and_receipts(tmp_path) -> None:
    path = tmp_path / "agent.sqlite3"
    with closing(Store(path)) as store:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        for _ in range(3):
            store.append_event(lambda seq: (seq, b"e%d" % seq))
    with closing(Store(path)) as store:  # reopened: seq continues
        assert store.append_event(lambda seq: (seq, b"x")) == 4
        assert store.receipt(2) == 2
        assert [s for s, _ in store.pending_events(0, 10)] == [3, 4]
        assert store.first_unreceipted() == 3
        assert store.last_seq == 4
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


def test_seq_and_the_command_mark_come_from_the_rows_and_a_floor_written_on_receipts(
    tmp_path,
) -> None:
    """An event's or a command's commit writes no ``meta`` row; ``seq`` continues after
    receipts emptied the outbox (their deletion writes the floor), and the mark comes
    back from the commands' counters (or from an older database's ``meta``)."""
    path = tmp_path / "agent.sqlite3"
    meta = "SELECT key, value FROM meta ORDER BY key"
    with closing(Store(path)) as store:
        for _ in range(3):
            store.append_event(lambda seq: (seq, b"e%d" % seq))
        _used(store, 70, 1.0)
        assert _committed(path, meta) == []
        with closing(sqlite3.connect(path)) as other:
            assert store_module.last_seq_given(other) == 3
        assert store.receipt(3) == 3  # committed at once, with the floor
        assert _committed(path, "SELECT count(*) FROM outbox") == [(0,)]
        assert _committed(path, meta) == [("next_seq", 4)]
        with closing(sqlite3.connect(path)) as other:
            assert store_module.last_seq_given(other) == 3
    with closing(Store(path)) as store:
        assert store.append_event(lambda seq: (seq, b"x")) == 4
        assert store.replay_window.high_water == 70
        assert store.replay_window.refusal(70) is not None
    with closing(sqlite3.connect(path)) as db:  # as an older agent left it
        db.execute("INSERT INTO meta (key, value) VALUES ('command_hwm', 900)")
        db.commit()
    with closing(Store(path)) as store:
        assert store.last_seq == 4
        assert store.replay_window.high_water == 900
        assert store.replay_window.refusal(900 - REPLAY_WINDOW) is not None


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
    with closing(Store(tmp_path / "agent.sqlite3")) as store:
        for i in range(50):
            store.add_telemetry(b"t%d" % i, keep=10)
            store.append_event(lambda seq: (seq, b"e"))
        assert [p for _, p in store.pending_telemetry()] == [b"t%d" % i for i in range(40, 50)]
        assert store.outbox_depth() == 50


def test_receipts_never_drop_unsent_events(tmp_path, public_key_file) -> None:
    cabinet, store, factory = _offline_cabinet(tmp_path, public_key_file)
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
    with closing(Store(tmp_path / "agent.sqlite3")) as store:
        store.use_code("a" * 64, 1.0)
        store.use_code("b" * 64, 1.0)
        assert store.forget_used_codes({"a" * 64}) == 1
        assert store.code_used("a" * 64)
        assert not store.code_used("b" * 64)


def test_atomic_writes_commit_together_or_not_at_all(tmp_path) -> None:
    with closing(Store(tmp_path / "agent.sqlite3")) as store:

        def interrupted() -> None:
            with store.atomic():
                store.record_command(
                    "c1", counter=7, compartment="a1", outcome=None, ack=None, now=1.0
                )
                store.append_event(lambda seq: (seq, b"unlocked"))
                raise RuntimeError("power cut before the commit")

        with pytest.raises(RuntimeError):
            interrupted()
        # Neither the command, nor its high-water mark, nor the event, nor the seq.
        assert store.command("c1") is None
        assert store.command_high_water == 0
        assert store.pending_events(0, 10) == []
        assert store.last_seq == 0
        with store.atomic():
            store.record_command("c1", counter=7, compartment="a1", outcome=None, ack=None, now=1.0)
            assert store.append_event(lambda seq: (seq, b"unlocked")) == 1
            # Inside: not committed yet (another connection does not see it).
            other = sqlite3.connect(tmp_path / "agent.sqlite3")
            assert other.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
            other.close()
        assert store.command("c1") is not None
        assert store.command_high_water == 7
        assert [s for s, _ in store.pending_events(0, 10)] == [1]


def test_bookkeeping_commits_are_not_flushed_but_stay_in_order(tmp_path) -> None:
    with closing(Store(tmp_path / "agent.sqlite3")) as store:
        store.record_command("c1", counter=1, compartment="a1", outcome=None, ack=None, now=1.0)
        store.finish_command("c1", "opened", b"ack")
        assert store.unsent_acks() == [("c1", b"ack")]
        store.mark_ack_sent("c1")
        # Back to FULL for everything after the bookkeeping commit.
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert store.unsent_acks() == []
        store.append_event(lambda seq: (seq, b"e"))
        assert store.receipt(1) == 1
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    with closing(Store(tmp_path / "agent.sqlite3")) as store:
        assert store.unsent_acks() == []
        assert store.pending_events(0, 10) == []


class _WatchedLock(MockPin):
    """A lock pin that reads the database (another connection) when it is energised."""

    seen: list[tuple[int, int]]
    path: str

    def _change_state(self, value):
        if value:
            db = sqlite3.connect(self.path)
            try:
                commands = db.execute("SELECT count(*) FROM commands").fetchone()[0]
                unlocked = db.execute(
                    "SELECT count(*) FROM outbox WHERE instr(CAST(payload AS TEXT), ?) > 0",
                    ('"type":"unlocked"',),
                ).fetchone()[0]
            finally:
                db.close()
            type(self).seen.append((commands, unlocked))
        return super()._change_state(value)


def test_command_and_unlocked_are_committed_before_the_pulse_and_announced_after_it(
    tmp_path, public_key_file, cloud_key
) -> None:
    from tests.edge.cloud import Cloud
    from tests.edge.conftest import LOCK_PINS

    config = parse_config(config_dict(tmp_path / "data", public_key_file, "mqtt://127.0.0.1:1"))
    store = Store(config.database_path)
    _WatchedLock.seen = []
    _WatchedLock.path = str(config.database_path)
    factory = MockFactory()
    factory.pin(LOCK_PINS["a1"], pin_class=_WatchedLock)
    kicks: list[tuple[int, int]] = []

    class Outlet:
        def kick(self) -> None:
            # What the link would publish now must already be committed; and the
            # pulse should not wait for the publishing (how many rising edges so far).
            db = sqlite3.connect(config.database_path)
            kicks.append(
                (db.execute("SELECT count(*) FROM outbox").fetchone()[0], len(_WatchedLock.seen))
            )
            db.close()

        def send_unstored_ack(self, payload: bytes) -> None:
            """Only refused forgeries are acked unstored; this test sends none."""

    cabinet = Cabinet(
        config,
        store,
        public_key=load_public_key(public_key_file),
        pin_factory=factory,
        outlet=Outlet(),
    )
    try:
        cabinet.open()
        kicks.clear()
        command = Cloud.__new__(Cloud)
        command.cabinet, command.counter, command.key = "cab-a", 0, cloud_key
        cabinet.handle_command(encode(command.unlock_command("a1")))
        # At the rising edge both the command and its `unlocked` event were on disk.
        assert _WatchedLock.seen == [(1, 1)]
        # One announcement for the pair, after their commit (boot + unlocked = 2 rows)
        # and after the pulse.
        assert kicks == [(2, 1)]
    finally:
        cabinet.close()
        store.close()


def _statements(store: Store) -> list[str]:
    """Every statement the store's connection runs from now on (sqlite3's trace)."""
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    return seen


def test_ack_marks_wait_for_the_next_receipt_outside_other_commits(tmp_path) -> None:
    path = tmp_path / "agent.sqlite3"
    with closing(Store(path)) as store:
        store.record_command("c1", counter=1, compartment="a1", outcome=None, ack=None, now=1.0)
        store.finish_command("c1", "opened", b"ack")
        store.append_event(lambda seq: (seq, b"e1"))
        seen = _statements(store)
        # The broker took the ack: nothing written, but it is no longer to be sent.
        store.mark_ack_sent("c1")
        assert seen == []
        assert store.unsent_acks() == []
        # The next event's commit (one an ack or a pulse may wait for) does not carry it.
        store.append_event(lambda seq: (seq, b"e2"))
        assert not any(s.startswith("UPDATE") for s in seen)
        # A receipt is committed at once (not flushed to disk), with the mark.
        seen.clear()
        assert store.receipt(1) == 1
        assert [s for s in seen if s in ("COMMIT", "PRAGMA synchronous=NORMAL")] == [
            "PRAGMA synchronous=NORMAL",
            "COMMIT",
        ]
        assert any(s.startswith("UPDATE commands SET ack_sent = 1") for s in seen)
        assert any(s.startswith("DELETE FROM outbox") for s in seen)
        assert store.first_unreceipted() == 2
        assert store.pending_events(0, 10) == [(2, b"e2")]
        assert _committed(path, "SELECT ack_sent FROM commands") == [(1,)]
        assert _committed(path, "SELECT seq FROM outbox") == [(2,)]
        seen.clear()
        assert not store.flush_bookkeeping()  # nothing left to write
        assert seen == []


def test_bookkeeping_alone_waits_its_age_and_is_written_at_close(tmp_path) -> None:
    path = tmp_path / "agent.sqlite3"
    with closing(Store(path)) as store:
        store.record_command("c1", counter=1, compartment="a1", outcome=None, ack=None, now=1.0)
        store.finish_command("c1", "opened", b"ack")
        store.mark_ack_sent("c1")
        assert not store.flush_bookkeeping(older_than=60.0)  # young: it may ride on a commit
        assert store.flush_bookkeeping(older_than=0.0)
        assert not store.flush_bookkeeping()  # nothing left
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
        assert _committed(path, "SELECT ack_sent FROM commands") == [(1,)]
        store.finish_command("c1", "opened", b"ack")  # no-op: finished already
        store.record_command("c2", counter=2, compartment="a1", outcome=None, ack=None, now=2.0)
        store.finish_command("c2", "opened", b"ack2")
        store.mark_ack_sent("c2")
        # closing writes c2's mark
    assert _committed(path, "SELECT id, ack_sent FROM commands ORDER BY id") == [
        ("c1", 1),
        ("c2", 1),
    ]


def test_a_rolled_back_transaction_changes_neither_memory_nor_bookkeeping(tmp_path) -> None:
    path = tmp_path / "agent.sqlite3"
    with closing(Store(path)) as store:
        store.record_command("c1", counter=1, compartment="a1", outcome=None, ack=None, now=1.0)
        store.record_command("c2", counter=2, compartment="a1", outcome=None, ack=None, now=2.0)
        store.finish_command("c1", "opened", b"ack1")
        store.mark_ack_sent("c1")

        def interrupted() -> None:
            with store.atomic():
                store.finish_command("c2", "opened", b"ack2")
                store.record_command(
                    "c3", counter=9, compartment="a1", outcome=None, ack=None, now=3.0
                )
                store.append_event(lambda seq: (seq, b"e"))
                raise RuntimeError("power cut before the commit")

        with pytest.raises(RuntimeError):
            interrupted()
        assert store.unsent_acks() == []  # c2's ack was never committed
        assert store.command_high_water == 2
        assert store.last_seq == 0
        assert store.first_unreceipted() is None
        store.append_event(lambda seq: (seq, b"e"))
        assert store.last_seq == 1
    with closing(Store(path)) as store:
        assert store.unsent_acks() == []
        assert store.command_high_water == 2
        assert [p for _, p in store.pending_events(0, 10)] == [b"e"]


def _used(store: Store, counter: int, at: float) -> None:
    """A command recorded with ``counter``, answered and its ack taken by the broker."""
    cid = f"c{counter}"
    store.record_command(cid, counter=counter, compartment="a1", outcome=None, ack=None, now=at)
    store.finish_command(cid, "opened", b"ack")
    store.mark_ack_sent(cid)


def test_seen_counters_survive_reopening_and_a_rolled_back_one_is_not_seen(tmp_path) -> None:
    path = tmp_path / "agent.sqlite3"
    top = REPLAY_WINDOW + 50
    with closing(Store(path)) as store:
        for counter in (top, top - 3, 51, 40):  # 51: just inside the window; 40: below it
            _used(store, counter, 1.0)

        def interrupted() -> None:
            with store.atomic():
                store.record_command(
                    "gone", counter=top - 1, compartment="a1", outcome=None, ack=None, now=2.0
                )
                raise RuntimeError("power cut before the commit")

        with pytest.raises(RuntimeError):
            interrupted()
        assert store.replay_window.refusal(top - 1) is None
    with closing(Store(path)) as store:
        window = store.replay_window
        assert window.high_water == top
        assert [c for c in (top, top - 3, 51, 50, 40) if window.refusal(c) is not None] == [
            top,
            top - 3,
            51,
            50,
            40,
        ]
        assert [c for c in (top - 1, top - 2, 52, top + 1) if window.refusal(c) is None] == [
            top - 1,
            top - 2,
            52,
            top + 1,
        ]


def test_trimming_old_commands_never_forgets_a_counter_inside_the_window(
    tmp_path, monkeypatch
) -> None:
    """Stored results are trimmed to the newest few, but never a row whose counter the
    window still needs, whatever their times say (a wall clock set back)."""
    monkeypatch.setattr(store_module, "_KEEP_COMMANDS", 10)
    monkeypatch.setattr(store_module, "_TRIM_EVERY", 1)
    path = tmp_path / "agent.sqlite3"
    top = 2 * REPLAY_WINDOW
    with closing(Store(path)) as store:
        # the newest counters were recorded at the oldest times
        for counter in range(1, top + 1):
            _used(store, counter, float(10 * top - counter))
        store.flush_bookkeeping()
        _used(store, top + 1, 0.0)  # one more trims with the marks written
        store.flush_bookkeeping()
    kept = {c for (c,) in _committed(path, "SELECT counter FROM commands")}
    floor = top + 1 - REPLAY_WINDOW
    assert set(range(floor + 1, top + 2)) <= kept  # the window's counters, all of them
    assert len(kept) < top  # and the trim did drop older ones
    with closing(Store(path)) as store:
        assert all(store.replay_window.refusal(c) is not None for c in range(1, top + 2))


def test_published_events_come_from_memory_and_match_the_database(tmp_path) -> None:
    path = tmp_path / "agent.sqlite3"
    with closing(Store(path)) as store:
        for i in range(5):
            store.append_event(lambda seq, i=i: (seq, b"e%d" % i))
        seen = _statements(store)
        assert store.pending_events(1, 2) == [(2, b"e1"), (3, b"e2")]
        assert store.first_unreceipted() == 1
        assert store.last_seq == 5
        assert store.unsent_acks() == []
        assert seen == []  # no query on the publishing path
    with closing(Store(path)) as store:  # after a restart they are read from the database
        assert store.pending_events(1, 2) == [(2, b"e1"), (3, b"e2")]
        assert store.receipt(3) == 3
        assert store.pending_events(0, 10) == [(4, b"e3"), (5, b"e4")]
        store.append_event(lambda seq: (seq, b"e5"))
        assert store.pending_events(3, 10) == [(4, b"e3"), (5, b"e4"), (6, b"e5")]
        assert store.receipt(100) == 3  # clamped to the last seq given out
        assert store.first_unreceipted() is None
        assert store.receipt(100) == 0


def test_an_unlock_commits_three_times_and_its_receipt_once(
    tmp_path, public_key_file, cloud_key
) -> None:
    """Command + `unlocked`, door_opened + ack, door_closed; the ack's PUBACK adds no
    commit of its own (it goes with the receipt's)."""
    from tests.edge.cloud import Cloud
    from tests.edge.conftest import DOOR_PINS

    cabinet, store, factory = _offline_cabinet(tmp_path, public_key_file)
    try:
        cabinet.open()
        cabinet.tick()  # the first heartbeat is due at once; it is not the unlock's
        seen = _statements(store)
        command = Cloud.__new__(Cloud)
        command.cabinet, command.counter, command.key = "cab-a", 0, cloud_key
        message = command.unlock_command("a1")
        cabinet.handle_command(encode(message))
        door = factory.pin(DOOR_PINS["a1"])
        door.drive_high()
        door.drive_low()
        assert [s for s in seen if s == "COMMIT"] == ["COMMIT"] * 3
        assert [cid for cid, _ in store.unsent_acks()] == [message.id]
        store.mark_ack_sent(message.id)
        cabinet.published_upto = store.last_seq
        assert [s for s in seen if s == "COMMIT"] == ["COMMIT"] * 3
        cabinet.handle_receipt(encode(Receipt(cabinet="cab-a", upto_seq=store.last_seq)))
        cabinet.tick()
        assert [s for s in seen if s == "COMMIT"] == ["COMMIT"] * 4
        assert store.unsent_acks() == []
        assert store.outbox_depth() == 0
    finally:
        cabinet.close()
        store.close()
        factory.reset()
    db = sqlite3.connect(cabinet.config.database_path)
    assert db.execute("SELECT ack_sent FROM commands").fetchall() == [(1,)]
    (left,) = db.execute("SELECT payload FROM outbox").fetchall()  # receipted: only shutdown
    assert b'"shutdown"' in left[0]
    db.close()


def test_a_requeued_ack_is_not_marked_sent_by_older_bookkeeping(tmp_path) -> None:
    """A duplicate delivery re-queues an ack whose PUBACK mark is not written yet: the
    later bookkeeping commit must not mark it sent again."""
    path = tmp_path / "agent.sqlite3"
    with closing(Store(path)) as store:
        store.record_command("c1", counter=1, compartment="a1", outcome=None, ack=None, now=1.0)
        store.finish_command("c1", "opened", b"ack")
        store.mark_ack_sent("c1")
        store.requeue_ack("c1")
        assert store.unsent_acks() == [("c1", b"ack")]
        store.flush_bookkeeping()
        assert store.unsent_acks() == [("c1", b"ack")]
    with closing(Store(path)) as store:
        assert store.unsent_acks() == [("c1", b"ack")]
