"""The ack lane: an ack commits (and its NOTIFY goes) while its cabinet's events wait.

Against a real PostgreSQL with the real rules: the locks an events transaction
holds (its cabinet's ``cabinets`` and ``ingest_presence`` rows, an alert row) do
not hold up an ack, or only as long as the same alert row requires; the two
connections never deadlock; and an ingest killed between an ack's commit and its
PUBACK applies the redelivered ack once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from smartlocker.cloud.downlink import create_unlock_command
from smartlocker.cloud.ingest.acklane import AckLane
from smartlocker.cloud.ingest.intake import Inbound, TopicCache
from smartlocker.cloud.ingest.seam import downlink_factory, load_rules
from smartlocker.cloud.ingest.writer import Outcome, Writer, WriterSettings
from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.rules.commands import mark_sent
from smartlocker.cloud.rules.fleet import CompartmentSpec, create_cabinet
from smartlocker.embedded import MosquittoBroker
from smartlocker.protocol import (
    Ack,
    AckOutcome,
    Alarm,
    AlarmKind,
    DoorOpened,
    TopicScheme,
    encode,
    generate_private_key,
    private_key_pem,
)
from tests.support.mqtt import connected
from tests.support.tcpproxy import TcpProxy

from .harness import InProcessIngest, count, event, provision, query, topic, wait_for
from .test_chaos import IngestProcess

KEYS = CloudKeys.from_private_key(generate_private_key())
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


def _inbound(message: Any, channel: str, mid: int) -> Inbound:
    return Inbound(
        topic(message.cabinet, channel), encode(message), datetime.now(UTC), ("conn", mid)
    )


def _command(db_url: str, cabinet: str, compartment: str = "c1") -> str:
    now = datetime.now(UTC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        command = create_unlock_command(conn, cabinet, compartment, "lane", "tester", now=now)
        mark_sent(conn, command.id, now=now)
    return command.id


def _online(db_url: str, cabinet: str) -> None:
    """The cabinet online, seen long ago, in the rules' and in ingest's presence."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE cabinets SET online = true, online_changed_at = %s, last_seen = %s"
            " WHERE id = %s",
            (LONG_AGO, LONG_AGO, cabinet),
        )
        conn.execute(
            "INSERT INTO ingest_presence (cabinet, last_seen, online) VALUES (%s, %s, true)",
            (cabinet, LONG_AGO),
        )


def _lane(db_url: str, on_committed: Callable[[Outcome], None] = lambda o: None) -> AckLane:
    return AckLane(
        WriterSettings(db_url, sweeps=False),
        load_rules(KEYS),
        TopicCache(TopicScheme()),
        on_committed,
    )


def _writer(db_url: str) -> Writer:
    return Writer(
        WriterSettings(db_url), load_rules(KEYS), TopicCache(TopicScheme()), lambda o: None
    )


class _Run:
    """``work()`` in a thread; what it returned or raised."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = work()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def done(self, timeout: float) -> bool:
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        return not self.thread.is_alive()


def test_an_ack_commits_and_notifies_while_an_events_transaction_holds_its_presence_rows(
    db_url: str,
) -> None:
    provision(db_url, ["cab-l"])
    _online(db_url, "cab-l")
    first, second = _command(db_url, "cab-l"), _command(db_url, "cab-l")
    lane, writer = _lane(db_url), _writer(db_url)
    try:
        with (
            psycopg.connect(db_url) as events_tx,
            psycopg.connect(db_url, autocommit=True) as listener,
        ):
            # What an uncommitted events batch of cab-l holds: its rows in both presences.
            events_tx.execute("UPDATE cabinets SET last_seen = now() WHERE id = 'cab-l'")
            events_tx.execute(
                "UPDATE ingest_presence SET last_seen = now() WHERE cabinet = 'cab-l'"
            )
            listener.execute("LISTEN smartlocker_command")
            ack = Ack(cabinet="cab-l", command_id=first, outcome=AckOutcome.OPENED)
            started = time.monotonic()
            on_lane = _Run(lambda: lane._commit([_inbound(ack, "acks", 1)]))
            assert on_lane.done(5), "the lane waited for the events transaction"
            notes = [json.loads(n.payload) for n in listener.notifies(timeout=2, stop_after=1)]
            assert time.monotonic() - started < 2
            assert notes == [
                {"id": first, "status": "succeeded", "outcome": "opened", "outcome_reason": None}
            ]
            assert query(db_url, "SELECT status FROM commands WHERE id = %s", (first,)) == [
                ("succeeded",)
            ]
            # The same ack on the normal path waits for that transaction (the lane is
            # what makes the difference, not the test's locks).
            ack = Ack(cabinet="cab-l", command_id=second, outcome=AckOutcome.OPENED)
            normal = _Run(lambda: writer._commit([_inbound(ack, "acks", 2)]))
            assert not normal.done(0.5), "the normal path did not wait: the test shows nothing"
            events_tx.rollback()
            assert normal.done(5)
        assert query(db_url, "SELECT status FROM commands WHERE id = %s", (second,)) == [
            ("succeeded",)
        ]
    finally:
        lane._drop_connection()
        writer._drop_connection()


def test_the_lane_moves_last_seen_of_online_cabinets_only(db_url: str) -> None:
    provision(db_url, ["cab-p", "cab-q"])
    _online(db_url, "cab-p")
    with psycopg.connect(db_url, autocommit=True) as conn:  # cab-q: offline, never seen
        conn.execute("UPDATE cabinets SET last_seen = %s WHERE id = 'cab-q'", (LONG_AGO,))
    acks = [
        Ack(cabinet=c, command_id=_command(db_url, c), outcome=AckOutcome.OPENED)
        for c in ("cab-p", "cab-q")
    ]
    lane = _lane(db_url)
    try:
        before = datetime.now(UTC)
        lane._commit([_inbound(a, "acks", i) for i, a in enumerate(acks)])
    finally:
        lane._drop_connection()
    ((seen, online),) = query(db_url, "SELECT last_seen, online FROM cabinets WHERE id = 'cab-p'")
    assert seen >= before
    assert online
    ((seen,),) = query(db_url, "SELECT last_seen FROM ingest_presence WHERE cabinet = 'cab-p'")
    assert seen >= before
    # The offline one is left to the normal path, which revives it with its next message.
    assert query(db_url, "SELECT last_seen, online FROM cabinets WHERE id = 'cab-q'") == [
        (LONG_AGO, False)
    ]
    assert count(db_url, "SELECT count(*) FROM ingest_presence WHERE cabinet = 'cab-q'") == 0
    assert query(db_url, "SELECT status FROM commands ORDER BY cabinet") == [
        ("succeeded",),
        ("succeeded",),
    ]


def test_refused_acks_are_dead_letters_with_their_reason(db_url: str) -> None:
    provision(db_url, ["cab-m"])
    command = _command(db_url, "cab-m")
    outcomes: list[Outcome] = []
    lane = _lane(db_url, outcomes.append)
    good = Ack(cabinet="cab-m", command_id=command, outcome=AckOutcome.OPENED)
    batch = [
        _inbound(good, "acks", 1),
        _inbound(Ack(cabinet="cab-mx", command_id="nope", outcome=AckOutcome.OPENED), "acks", 2),
        Inbound(topic("cab-m", "acks"), b"{not json", datetime.now(UTC), ("conn", 3)),
        Inbound(
            topic("cab-m", "acks"),
            encode(good).replace(b"cab-m", b"cab-z"),
            datetime.now(UTC),
            ("conn", 4),
        ),
    ]
    try:
        outcome = lane._commit(batch)
    finally:
        lane._drop_connection()
    assert outcome.dead == 3
    assert query(db_url, "SELECT status FROM commands WHERE id = %s", (command,)) == [
        ("succeeded",)
    ]
    assert query(db_url, "SELECT topic, reason FROM dead_letters ORDER BY reason") == [
        ("lockers/cab-m/acks", "cabinet_mismatch"),
        ("lockers/cab-m/acks", "malformed"),
        ("lockers/cab-mx/acks", "unknown_cabinet"),
    ]


def test_an_ack_and_an_events_batch_on_the_same_alert_do_not_deadlock(db_url: str) -> None:
    """Lock order: the lane takes presence rows last, after any row it may wait for.

    The events transaction holds cab-d's presence rows and a new ``unlock_failed``
    alert of c1 (from an alarm event), and is stuck on compartment c2 (held here).
    The lane's ``not_opened`` ack for c1 must wait for that alert row. Had the lane
    locked cab-d's ``ingest_presence`` row before (it is free until the events
    transaction's end), the events transaction would then wait for it: a deadlock.
    """
    provision(db_url, [])
    with psycopg.connect(db_url, autocommit=True) as conn:
        create_cabinet(
            conn,
            "cab-d",
            "site-t",
            [CompartmentSpec(id="c1", size="m"), CompartmentSpec(id="c2", size="m")],
        )
    _online(db_url, "cab-d")
    command = _command(db_url, "cab-d")
    lane, writer = _lane(db_url), _writer(db_url)
    alarm = Alarm(
        cabinet="cab-d", seq=1, compartment="c1", kind=AlarmKind.UNLOCK_FAILED, active=True
    )
    opened = DoorOpened(cabinet="cab-d", seq=2, compartment="c2", granted=False)
    ack = Ack(cabinet="cab-d", command_id=command, outcome=AckOutcome.NOT_OPENED)
    try:
        with psycopg.connect(db_url) as blocker:
            blocker.execute(
                "SELECT 1 FROM compartments WHERE cabinet = 'cab-d' AND id = 'c2' FOR UPDATE"
            )
            events = _Run(
                lambda: writer._commit(
                    [_inbound(alarm, "events", 1), _inbound(opened, "events", 2)]
                )
            )
            wait_for(
                lambda: _waiting(db_url, "UPDATE compartments"),
                what="the events transaction stuck on c2",
            )
            on_lane = _Run(lambda: lane._commit([_inbound(ack, "acks", 3)]))
            wait_for(lambda: _waiting(db_url, "INSERT INTO alerts"), what="the lane on c1's alert")
            blocker.rollback()
            assert events.done(10)
            assert on_lane.done(10)
    finally:
        lane._drop_connection()
        writer._drop_connection()
    assert query(
        db_url,
        "SELECT occurrences FROM alerts WHERE cabinet = 'cab-d' AND kind = 'unlock_failed'"
        " AND cleared_at IS NULL",
    ) == [(2,)]
    assert query(db_url, "SELECT status FROM commands WHERE id = %s", (command,)) == [("failed",)]
    assert count(db_url, "SELECT count(*) FROM events WHERE cabinet = 'cab-d'") == 2


def _waiting(db_url: str, statement: str) -> bool:
    """Whether some session waits for a lock in a statement that contains ``statement``."""
    return (
        count(
            db_url,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE %s",
            ("%" + statement + "%",),
        )
        > 0
    )


def test_through_mqtt_an_ack_is_committed_while_its_cabinets_events_are_stuck(
    fresh_broker: MosquittoBroker, db_url: str
) -> None:
    # A broker of its own: other tests' retained messages on the session's broker would
    # reach this ingest too, and could be held behind the stuck writer (the count below).
    mqtt_broker = fresh_broker
    provision(db_url, ["cab-s"])
    command = _command(db_url, "cab-s")
    with (
        psycopg.connect(db_url) as blocker,
        psycopg.connect(db_url, autocommit=True) as listener,
        InProcessIngest(
            mqtt_broker.url,
            db_url,
            rules=load_rules(KEYS),
            deliver_factory=downlink_factory(KEYS),
        ) as ingest,
        connected(mqtt_broker.host, mqtt_broker.port) as cab,
    ):
        assert ingest.worker is not None
        listener.execute("LISTEN smartlocker_command")
        # The door event's rules wait for c1 (held here): that events transaction
        # holds cab-s's rows meanwhile, and its writer can do nothing else.
        blocker.execute("SELECT 1 FROM compartments WHERE cabinet = 'cab-s' FOR UPDATE")
        cab.publish(
            topic("cab-s", "events"),
            encode(DoorOpened(cabinet="cab-s", seq=1, compartment="c1", granted=True)),
        )
        wait_for(lambda: _waiting(db_url, "UPDATE compartments"), what="the events stuck")
        cab.publish(
            topic("cab-s", "acks"),
            encode(Ack(cabinet="cab-s", command_id=command, outcome=AckOutcome.OPENED)),
        )
        notes = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=1)]
        assert notes == [
            {"id": command, "status": "succeeded", "outcome": "opened", "outcome_reason": None}
        ]
        # ... and PUBACKed (one message left unacknowledged: the stuck event).
        wait_for(lambda: ingest.worker is not None and ingest.worker._unacked == 1, what="PUBACK")
        assert count(db_url, "SELECT count(*) FROM events WHERE cabinet = 'cab-s'") == 0
        blocker.rollback()
        wait_for(lambda: ingest.worker is not None and ingest.worker._unacked == 0, what="all in")
    assert count(db_url, "SELECT count(*) FROM events WHERE cabinet = 'cab-s'") == 1
    assert query(db_url, "SELECT door FROM compartments WHERE cabinet = 'cab-s'") == [("open",)]


@pytest.mark.slow
def test_an_ack_redelivered_after_a_kill_between_commit_and_puback_applies_once(
    fresh_broker: MosquittoBroker, db_url: str, tmp_path: Path
) -> None:
    provision(db_url, ["cab-k"])
    opened, failed = _command(db_url, "cab-k"), _command(db_url, "cab-k")
    key = tmp_path / "cloud.pem"
    key.write_bytes(private_key_pem(generate_private_key()))
    with TcpProxy(fresh_broker.host, fresh_broker.port) as proxy:
        ingest = IngestProcess(
            f"mqtt://{proxy.host}:{proxy.port}", db_url, tmp_path / "ingest.log", key
        )
        # INFO: the rules log each ack they ignore (already final), i.e. each redelivery.
        ingest.args[ingest.args.index("WARNING")] = "INFO"
        ingest.start()
        try:
            with connected(fresh_broker.host, fresh_broker.port) as cab:
                cab.subscribe(topic("cab-k", "receipts"))
                # Ingest is up and subscribed once an event is receipted (and it
                # brings cab-k online, so the acks will move its last_seen).
                deadline = time.monotonic() + 20
                while True:  # the same event until then (a later seq would wait for it)
                    cab.publish(topic("cab-k", "events"), event("cab-k", 1))
                    try:
                        cab.expect(timeout=1)
                        break
                    except AssertionError:
                        assert time.monotonic() < deadline, (tmp_path / "ingest.log").read_text()
                # From now on the broker hears nothing from ingest: no PUBACK arrives.
                proxy.hold()
                for command, outcome in ((opened, AckOutcome.OPENED), (failed, AckOutcome.FAILED)):
                    cab.publish(
                        topic("cab-k", "acks"),
                        encode(Ack(cabinet="cab-k", command_id=command, outcome=outcome)),
                    )
                wait_for(
                    lambda: (
                        count(
                            db_url,
                            "SELECT count(*) FROM commands WHERE status IN ('succeeded', 'failed')",
                        )
                        == 2
                    ),
                    what="both acks committed",
                )
                # Their PUBACKs written (and kept back by the proxy).
                wait_for(lambda: proxy.held > 0, what="the PUBACKs")
                ingest.kill()
                proxy.hold(False)
                applied = query(db_url, "SELECT id, status, xmin::text FROM commands ORDER BY id")
                alerts = query(db_url, "SELECT id, kind, occurrences FROM alerts ORDER BY id")
                killed_at = datetime.now(UTC)
                # Back with the same session: the broker redelivers both acks.
                ingest.start()
                log = tmp_path / "ingest.log"
                for command in (opened, failed):
                    wait_for(
                        lambda c=command: (
                            f"ack for command {c} of cab-k ignored" in log.read_text()
                        ),
                        timeout=20,
                        what="the redelivered ack",
                    )
                ((seen,),) = query(db_url, "SELECT last_seen FROM cabinets WHERE id = 'cab-k'")
                assert seen > killed_at  # the lane touched it
                time.sleep(0.5)
        finally:
            ingest.stop()
    assert applied == query(db_url, "SELECT id, status, xmin::text FROM commands ORDER BY id")
    assert alerts == query(db_url, "SELECT id, kind, occurrences FROM alerts ORDER BY id")
    assert [(k, n) for _, k, n in alerts] == [("command_failed", 1)]
    assert query(db_url, "SELECT status FROM commands WHERE id = %s", (opened,)) == [("succeeded",)]
    text = (tmp_path / "ingest.log").read_text()
    assert " ERROR smartlocker" not in text, text
    assert text.count(f"ack for command {opened} of cab-k ignored") == 1


class _RefusingRules:
    """The real rules, except that one command's ack makes them fail (a bug, bad data)."""

    def __init__(self, refused: str) -> None:
        self._rules = load_rules(KEYS)
        self._refused = refused

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rules, name)

    def on_lane_acks(self, conn: psycopg.Connection[Any], acks: Any, now: datetime) -> Any:
        if any(a.command_id == self._refused for a in acks):
            self._rules.on_lane_acks(conn, acks, now)  # its writes must be rolled back
            raise RuntimeError("refused")
        return self._rules.on_lane_acks(conn, acks, now)


def test_an_ack_the_rules_refuse_is_a_dead_letter_and_the_others_commit(db_url: str) -> None:
    provision(db_url, ["cab-e"])
    good, bad = _command(db_url, "cab-e"), _command(db_url, "cab-e")
    outcomes: list[Outcome] = []
    lane = AckLane(
        WriterSettings(db_url, sweeps=False, retry_delay=0.01),
        _RefusingRules(bad),
        TopicCache(TopicScheme()),
        outcomes.append,
    )
    batch = [
        _inbound(Ack(cabinet="cab-e", command_id=c, outcome=AckOutcome.OPENED), "acks", i)
        for i, c in enumerate((bad, good))
    ]
    try:
        outcome = lane._commit_with_retry(batch, None)
    finally:
        lane._drop_connection()
    assert outcome is not None
    assert outcome.items == batch
    assert outcome.dead == 1
    assert query(db_url, "SELECT id, status FROM commands ORDER BY id") == sorted(
        [(good, "succeeded"), (bad, "sent")]
    )
    assert query(db_url, "SELECT reason FROM dead_letters") == [("processing_error",)]


def test_acks_queued_behind_a_transaction_commit_together_after_it(db_url: str) -> None:
    provision(db_url, ["cab-b"])
    first, *rest = [_command(db_url, "cab-b") for _ in range(4)]
    outcomes: list[Outcome] = []
    lane = _lane(db_url, outcomes.append)
    lane.start()
    try:
        with psycopg.connect(db_url) as blocker:
            blocker.execute("SELECT 1 FROM commands WHERE id = %s FOR UPDATE", (first,))
            for i, command in enumerate([first, *rest]):
                ack = Ack(cabinet="cab-b", command_id=command, outcome=AckOutcome.OPENED)
                lane.submit([_inbound(ack, "acks", i)])
                if i == 0:
                    wait_for(lambda: _waiting(db_url, "UPDATE commands"), what="the first ack")
            time.sleep(0.2)
            assert outcomes == []
        wait_for(lambda: sum(len(o.items) for o in outcomes) == 4, what="all four committed")
    finally:
        lane.stop()
    assert [len(o.items) for o in outcomes] == [1, 3]
    assert [tok for o in outcomes for tok in (i.token for i in o.items)] == [
        ("conn", i) for i in range(4)
    ]
    assert count(db_url, "SELECT count(*) FROM commands WHERE status = 'succeeded'") == 4
