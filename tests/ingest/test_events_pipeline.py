"""The events writer's round trips: an unlock's events and their rules, and a raced COPY.

Against a real PostgreSQL with the real rules, round trips counted on the wire (a
proxy reads the client's protocol messages, ``tests/support/pgwire.py``). An
unlock's three events were twelve round trips in the writer's transaction (BEGIN,
a savepoint each way around the COPY, the COPY, the cursors, then a statement a
trip for the rules, COMMIT); the rules' plain updates are now pipelined and the
COPY has no savepoint. A COPY that meets an event another worker committed
meanwhile rolls the transaction back and runs it again through the staging table:
each rule applied once, nothing lost.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from smartlocker.cloud.ingest.intake import Inbound, TopicCache
from smartlocker.cloud.ingest.seam import load_rules
from smartlocker.cloud.ingest.writer import Writer, WriterSettings
from smartlocker.cloud.rules.fleet import CompartmentSpec, create_cabinet
from smartlocker.protocol import (
    AlarmKind,
    DoorClosed,
    DoorOpened,
    TopicScheme,
    Unlocked,
    UnlockSource,
    encode,
)
from smartlocker.protocol.messages import Alarm
from tests.support.pgwire import PgWireTap

from .harness import provision, query, topic
from .test_ack_lane import KEYS, _command, _online

SITE = "site-e"


def _cabinet(db_url: str, cabinet: str) -> None:
    provision(db_url, [], site=SITE)
    with psycopg.connect(db_url, autocommit=True) as conn:
        create_cabinet(conn, cabinet, SITE, [CompartmentSpec(id="c1", size="m")])
    _online(db_url, cabinet)


def _writer(db_url: str, effects: list[Any] | None = None) -> Writer:
    return Writer(
        WriterSettings(db_url, sweeps=False),
        load_rules(KEYS),
        TopicCache(TopicScheme()),
        lambda outcome: None,
        deliver=None if effects is None else lambda conn, more: effects.extend(more),
    )


def _inbound(message: Any) -> Inbound:
    return Inbound(
        topic(message.cabinet, "events"), encode(message), datetime.now(UTC), ("c", message.seq)
    )


def _unlock(cabinet: str, command: str, seq: int, at: datetime) -> list[Inbound]:
    """An unlock's events: the pulse, the door opened, the door closed."""
    return [
        _inbound(
            Unlocked(
                cabinet=cabinet,
                seq=seq,
                ts=at,
                compartment="c1",
                source=UnlockSource.COMMAND,
                command_id=command,
                pulse_ms=300,
            )
        ),
        _inbound(
            DoorOpened(
                cabinet=cabinet,
                seq=seq + 1,
                ts=at + timedelta(milliseconds=5),
                compartment="c1",
                granted=True,
            )
        ),
        _inbound(
            DoorClosed(
                cabinet=cabinet,
                seq=seq + 2,
                ts=at + timedelta(milliseconds=9),
                compartment="c1",
                open_seconds=0.004,
            )
        ),
    ]


def test_an_unlocks_events_commit_in_seven_round_trips(db_url: str) -> None:
    """``BEGIN``; the COPY (its start and its end); the cursors' version-checked update;
    the cabinet's ``last_seen`` and clock; the rules' plain updates and the closed
    door's grant (and whether a held-open alert is open: none, so no clearing is
    sent), read with the pipeline's Sync; ``COMMIT``. Was thirteen: a ``SAVEPOINT``
    and its ``RELEASE`` around the COPY, the clock read apart, and a trip for each of
    the rules' statements."""
    _cabinet(db_url, "cab-p")
    first, second = _command(db_url, "cab-p"), _command(db_url, "cab-p")
    at = datetime.now(UTC)
    with PgWireTap(db_url) as tap:
        writer = _writer(tap.url)
        try:
            # Connects, looks the cabinet up, locks and reads its cursor, touches presence.
            writer._commit(_unlock("cab-p", first, 1, at))
            mark = tap.mark()
            outcome = writer._commit(_unlock("cab-p", second, 4, at + timedelta(seconds=1)))
            wire = "".join(tap.messages[mark:])
        finally:
            writer._drop_connection()
    assert (outcome.new_events, outcome.receipts) == (3, {"cab-p": 6})
    waits = [
        "Q",  # BEGIN (a simple query)
        "Qdc",  # the COPY: a wait for its start, one for its end
        "PBDES",  # the cursor's update (its row count is read)
        "PBDEH",  # the cabinet's last_seen and clock correction
        "PBDE" * 2 + "SH",  # unlocked and opened (one statement), closed: read with the Sync
        "Q",  # COMMIT
    ]
    assert wire == "".join(waits)
    assert query(
        db_url, "SELECT door, lock, grant_kind FROM compartments WHERE cabinet = 'cab-p'"
    ) == [("closed", "locked", None)]


def test_a_raced_copy_runs_again_through_staging_with_each_rule_once(db_url: str) -> None:
    """Another worker committed one of the batch's events since this writer last
    saw the cabinet's cursor: the COPY meets the unique key, the transaction rolls
    back and runs again through the staging table. The alarm the other worker
    applied is not applied again (its alert counts one occurrence), the new events
    are, and the cursor covers them all."""
    _cabinet(db_url, "cab-race")
    command = _command(db_url, "cab-race")
    at = datetime.now(UTC)
    effects: list[Any] = []
    writer, other = _writer(db_url, effects), _writer(db_url)
    alarm = _inbound(
        Alarm(
            cabinet="cab-race",
            seq=4,
            ts=at + timedelta(seconds=1),
            compartment="c1",
            kind=AlarmKind.FORCED_OPEN,
            active=True,
        )
    )
    try:
        assert writer._commit(_unlock("cab-race", command, 1, at)).new_events == 3
        assert other._commit([alarm]).new_events == 1
        later = _unlock("cab-race", command, 5, at + timedelta(seconds=2))
        outcome = writer._commit([alarm, *later])
    finally:
        writer._drop_connection()
        other._drop_connection()
    assert (outcome.new_events, outcome.duplicates, outcome.receipts) == (
        3,
        1,
        {"cab-race": 7},
    )
    assert query(db_url, "SELECT kind, occurrences FROM alerts WHERE cabinet = 'cab-race'") == [
        ("forced_open", 1)
    ]
    assert query(db_url, "SELECT count(*) FROM events WHERE cabinet = 'cab-race'") == [(7,)]
    assert query(
        db_url, "SELECT door, lock, grant_kind FROM compartments WHERE cabinet = 'cab-race'"
    ) == [("closed", "locked", None)]
    assert query(db_url, "SELECT count(*) FROM dead_letters") == [(0,)]
