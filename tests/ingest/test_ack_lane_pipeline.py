"""The ack lane in two round trips: an ack's outcome says whether it has alerts to clear.

Against a real PostgreSQL with the real rules. The lane sends each command's
outcome in one round trip; for an ``opened`` ack the same statement says whether
its compartment has alerts a success clears (``rules.commands.send_outcome``,
``alerts_open``), and only then is their clearing sent; what the results call for,
``last_seen`` and ``COMMIT`` go in a second. Round trips are counted on the wire
(a proxy reads the client's protocol messages). The lane must not show: the
alerts, their webhook notifications, the effects and the rules' log are those of
the normal path (``on_ack``), and a duplicate ack of a command already final
clears nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from smartlocker.cloud.ingest.acklane import AckLane
from smartlocker.cloud.ingest.intake import Inbound, TopicCache
from smartlocker.cloud.ingest.seam import load_rules
from smartlocker.cloud.ingest.writer import Writer, WriterSettings
from smartlocker.cloud.reactions import Effects
from smartlocker.cloud.rules.alerts import AlertKind, raise_alert
from smartlocker.cloud.rules.fleet import CompartmentSpec, create_cabinet
from smartlocker.cloud.rules.notifications import subscribe_webhook
from smartlocker.protocol import Ack, AckOutcome, TopicScheme
from tests.support.pgwire import PgWireTap

from .harness import count, provision, query, topic
from .test_ack_lane import KEYS, _command, _inbound, _online

SITE = "site-t"


def _cabinets(db_url: str, *cabinets: str) -> None:
    """``cabinets`` online, with compartments c1 and c2; the site's webhook hears alerts."""
    provision(db_url, [], site=SITE)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for cabinet in cabinets:
            create_cabinet(
                conn,
                cabinet,
                SITE,
                [CompartmentSpec(id="c1", size="m"), CompartmentSpec(id="c2", size="m")],
            )
        subscribe_webhook(
            conn, SITE, "http://hooks.example/alerts", ["alert.raised", "alert.cleared"]
        )
    for cabinet in cabinets:
        _online(db_url, cabinet)


def _raise(db_url: str, cabinet: str, compartment: str, kind: AlertKind) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        alert, new = raise_alert(
            conn, cabinet, kind, now=datetime.now(UTC), compartment=compartment, detail="test"
        )
    assert new
    return alert


def _ack(
    cabinet: str, command: str, outcome: AckOutcome = AckOutcome.OPENED, reason: str | None = None
) -> Ack:
    return Ack(cabinet=cabinet, command_id=command, outcome=outcome, reason=reason)


def _lane(
    db_url: str,
    effects: list[Any] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> AckLane:
    return AckLane(
        WriterSettings(db_url, sweeps=False),
        load_rules(KEYS),
        TopicCache(TopicScheme()),
        lambda outcome: None,
        deliver=None if effects is None else lambda conn, more: effects.extend(more),
        clock=clock,
    )


def _open_alerts(db_url: str) -> list[tuple[Any, ...]]:
    return query(
        db_url,
        "SELECT cabinet, compartment, kind FROM alerts WHERE cleared_at IS NULL ORDER BY id",
    )


def test_acks_that_succeed_commit_in_two_round_trips(db_url: str) -> None:
    _cabinets(db_url, "cab-r")
    commands = [_command(db_url, "cab-r", "c1") for _ in range(5)]
    with PgWireTap(db_url) as tap:
        lane = _lane(tap.url)
        try:
            # Connects, and looks cab-r up (then known for a minute).
            lane._commit([_inbound(_ack("cab-r", commands[0]), "acks", 0)])
            mark = tap.mark()
            outcome = lane._commit([_inbound(_ack("cab-r", commands[1]), "acks", 1)])
            assert outcome.dead == 0
            wire = "".join(tap.messages[mark:])
            assert tap.round_trips(mark) == 2, wire
            # BEGIN, the outcome (which says no alert of c1 is open), last_seen, COMMIT:
            # four statements (the clearing of no alert, sent with the outcome before it
            # was known, made five).
            assert wire.count("E") == 4, wire
            # Three acks (one refused by the cabinet), a dead letter: still two.
            mark = tap.mark()
            batch = [
                _inbound(_ack("cab-r", commands[2]), "acks", 2),
                _inbound(_ack("cab-r", commands[3], REJECTED, "expired"), "acks", 3),
                Inbound(topic("cab-r", "acks"), b"{not json", datetime.now(UTC), ("conn", 4)),
                _inbound(_ack("cab-r", commands[4]), "acks", 5),
            ]
            outcome = lane._commit(batch)
            assert outcome.dead == 1
            assert tap.round_trips(mark) == 2, "".join(tap.messages[mark:])
        finally:
            lane._drop_connection()
    assert query(db_url, "SELECT id, status FROM commands ORDER BY id") == sorted(
        [(c, "rejected" if c == commands[3] else "succeeded") for c in commands]
    )
    assert query(db_url, "SELECT reason FROM dead_letters") == [("malformed",)]


def test_a_success_clears_its_compartments_failure_alerts_in_its_transaction(
    db_url: str,
) -> None:
    _cabinets(db_url, "cab-a")
    failed = _raise(db_url, "cab-a", "c1", AlertKind.COMMAND_FAILED)
    unlock = _raise(db_url, "cab-a", "c1", AlertKind.UNLOCK_FAILED)
    _raise(db_url, "cab-a", "c1", AlertKind.HELD_OPEN)  # not a command's: stays
    _raise(db_url, "cab-a", "c2", AlertKind.UNLOCK_FAILED)  # another compartment's: stays
    command = _command(db_url, "cab-a", "c1")
    effects: list[Any] = []
    lane = _lane(db_url, effects)
    try:
        lane._commit([_inbound(_ack("cab-a", command), "acks", 1)])
    finally:
        lane._drop_connection()
    assert Effects.combine(effects) == Effects(alerts_cleared=[failed, unlock])
    assert _open_alerts(db_url) == [("cab-a", "c1", "held_open"), ("cab-a", "c2", "unlock_failed")]
    # Cleared by the ack's own transaction (the same xmin), at its time, and notified in it.
    ((finished, xmin),) = query(
        db_url, "SELECT finished_at, xmin::text FROM commands WHERE id = %s", (command,)
    )
    assert query(
        db_url,
        "SELECT id, cleared_at, xmin::text FROM alerts WHERE cleared_at IS NOT NULL ORDER BY id",
    ) == [(failed, finished, xmin), (unlock, finished, xmin)]
    assert query(
        db_url,
        "SELECT (payload->>'alert')::bigint, payload->>'compartment', payload->>'kind',"
        " xmin::text FROM outbound_messages WHERE topic = 'alert.cleared' ORDER BY id",
    ) == [(failed, "c1", "command_failed", xmin), (unlock, "c1", "unlock_failed", xmin)]


def test_a_duplicate_ack_leaves_an_alert_raised_after_its_command_succeeded(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _cabinets(db_url, "cab-u")
    command = _command(db_url, "cab-u", "c1")
    effects: list[Any] = []
    # One ``now`` for both batches: the command's finished_at equals the duplicate's
    # ``now``, so only "moved by this very transaction" keeps the alert open.
    now = datetime.now(UTC)
    lane = _lane(db_url, effects, clock=lambda: now)
    try:
        lane._commit([_inbound(_ack("cab-u", command), "acks", 1)])
        newer = _raise(db_url, "cab-u", "c1", AlertKind.UNLOCK_FAILED)
        with caplog.at_level(logging.INFO, logger="smartlocker.cloud"):
            lane._commit([_inbound(_ack("cab-u", command), "acks", 2)])
    finally:
        lane._drop_connection()
    assert effects == []
    assert query(db_url, "SELECT id FROM alerts WHERE cleared_at IS NULL") == [(newer,)]
    assert (
        count(db_url, "SELECT count(*) FROM outbound_messages WHERE topic = 'alert.cleared'") == 0
    )
    assert f"ack for command {command} of cab-u ignored (unknown or final)" in caplog.messages
    assert query(db_url, "SELECT status, finished_at FROM commands") == [("succeeded", now)]


def test_failed_acks_raise_their_alerts_and_a_later_success_in_the_batch_clears_one(
    db_url: str,
) -> None:
    _cabinets(db_url, "cab-f")
    jammed, stuck = _command(db_url, "cab-f", "c1"), _command(db_url, "cab-f", "c2")
    opened = _command(db_url, "cab-f", "c2")
    effects: list[Any] = []
    lane = _lane(db_url, effects)
    try:
        lane._commit(
            [
                _inbound(_ack("cab-f", jammed, AckOutcome.FAILED, "jammed"), "acks", 1),
                _inbound(_ack("cab-f", stuck, AckOutcome.NOT_OPENED), "acks", 2),
                # c2's alert is raised by the ack before: this one clears it, as on_ack would.
                _inbound(_ack("cab-f", opened), "acks", 3),
            ]
        )
    finally:
        lane._drop_connection()
    alerts = query(
        db_url, "SELECT id, compartment, kind, detail, cleared_at IS NULL FROM alerts ORDER BY id"
    )
    assert [a[1:] for a in alerts] == [
        ("c1", "command_failed", f"command {jammed}: failed (jammed)", True),
        ("c2", "unlock_failed", f"command {stuck}: not_opened", False),
    ]
    ids = [a[0] for a in alerts]
    assert Effects.combine(effects) == Effects(alerts_raised=ids, alerts_cleared=[ids[1]])
    assert query(
        db_url,
        "SELECT topic, (payload->>'alert')::bigint FROM outbound_messages ORDER BY id",
    ) == [("alert.raised", ids[0]), ("alert.raised", ids[1]), ("alert.cleared", ids[1])]
    assert query(db_url, "SELECT id, status FROM commands ORDER BY id") == sorted(
        [(jammed, "failed"), (stuck, "failed"), (opened, "succeeded")]
    )


# --- the lane against the normal path, ack for ack ------------------------------------

#: The commands' compartments (command k<i> is in COMPARTMENTS[i]).
COMPARTMENTS = ["c1", "c2", "c1", "c1", "c2", "c1", "c2", "c1", "c2", "c1"]
OPENED, NOT_OPENED, FAILED, REJECTED = (
    AckOutcome.OPENED,
    AckOutcome.NOT_OPENED,
    AckOutcome.FAILED,
    AckOutcome.REJECTED,
)
#: Batches of acks: (command, outcome, reason); "raise" raises alerts between batches.
SCENARIO: list[Any] = [
    [
        (0, OPENED, None),  # clears c1's command_failed
        (1, NOT_OPENED, None),  # c2's unlock_failed is open: bumped
        (2, FAILED, "jammed"),  # a new command_failed on c1
        (3, OPENED, None),  # after a failure of its cabinet: clears it only then
        (0, OPENED, None),  # a duplicate in the batch
    ],
    [(4, OPENED, None), (5, REJECTED, "expired"), (6, NOT_OPENED, "blocked")],
    "raise",
    [
        (4, OPENED, None),  # late duplicate: leaves the alerts raised since
        (9, OPENED, None),  # clears c1's command_failed raised since
        (7, NOT_OPENED, None),
        (7, OPENED, None),  # contradicts a final outcome: ignored
        (8, OPENED, None),  # clears c2's, after c1's failure
        (6, OPENED, None),
    ],
]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _run(
    db_url: str, cabinet: str, writer: Writer, effects: list[Any]
) -> tuple[list[Effects], list[str], list[str]]:
    """The scenario on ``cabinet`` through ``writer``: effects per batch, rules' log, ids."""
    handler = _Records()
    rules_logger = logging.getLogger("smartlocker.cloud")
    rules_logger.addHandler(handler)
    level = rules_logger.level
    rules_logger.setLevel(logging.INFO)
    commands = [_command(db_url, cabinet, c) for c in COMPARTMENTS]
    _raise(db_url, cabinet, "c1", AlertKind.COMMAND_FAILED)
    _raise(db_url, cabinet, "c2", AlertKind.UNLOCK_FAILED)
    per_batch: list[Effects] = []
    try:
        for n, batch in enumerate(SCENARIO):
            if batch == "raise":
                _raise(db_url, cabinet, "c2", AlertKind.COMMAND_FAILED)
                _raise(db_url, cabinet, "c1", AlertKind.COMMAND_FAILED)
                continue
            del effects[:]
            writer._commit(
                [
                    _inbound(_ack(cabinet, commands[i], outcome, reason), "acks", 10 * n + j)
                    for j, (i, outcome, reason) in enumerate(batch)
                ]
            )
            per_batch.append(Effects.combine(effects))
    finally:
        writer._drop_connection()
        rules_logger.removeHandler(handler)
        rules_logger.setLevel(level)
    log = [
        r.getMessage()
        for r in handler.records
        if r.name.startswith(("smartlocker.cloud.rules", "smartlocker.cloud.reactions"))
    ]
    return per_batch, log, commands


def _normalized(
    db_url: str, cabinet: str, run: tuple[list[Effects], list[str], list[str]]
) -> dict[str, Any]:
    """What the run left and said, with its cabinet's names and ids replaced by ranks."""
    per_batch, log, commands = run
    alerts = query(
        db_url,
        "SELECT id, compartment, kind, detail, occurrences, cleared_at IS NULL AS open"
        " FROM alerts"
        " WHERE cabinet = %s ORDER BY id",
        (cabinet,),
    )
    rank = {a[0]: f"a{n}" for n, a in enumerate(alerts)}
    names = {cabinet: "CAB", **{c: f"k{i}" for i, c in enumerate(commands)}}
    pattern = re.compile("|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)))

    def text(value: Any) -> Any:
        return pattern.sub(lambda m: names[m.group(0)], value) if isinstance(value, str) else value

    return {
        "alerts": [(rank[a[0]], *(text(v) for v in a[1:])) for a in alerts],
        "commands": query(
            db_url,
            "SELECT array_position(%s, id), status, outcome, outcome_reason FROM commands"
            " WHERE cabinet = %s ORDER BY 1",
            (commands, cabinet),
        ),
        "notifications": [
            (topic_, rank[alert], compartment, kind)
            for topic_, alert, compartment, kind in query(
                db_url,
                "SELECT topic, (payload->>'alert')::bigint, payload->>'compartment',"
                " payload->>'kind' FROM outbound_messages WHERE payload->>'cabinet' = %s"
                " ORDER BY id",
                (cabinet,),
            )
        ],
        "effects": [
            (
                [rank[a] for a in e.alerts_raised],
                [rank[a] for a in e.alerts_cleared],
                e.desired_changed,
                e.transitions,
                e.notifications,
            )
            for e in per_batch
        ],
        "log": [text(line) for line in log],
    }


def test_the_lane_leaves_and_says_what_the_normal_path_does(db_url: str) -> None:
    _cabinets(db_url, "cab-lane", "cab-norm")
    lane_effects: list[Any] = []
    normal_effects: list[Any] = []
    lane = _lane(db_url, lane_effects)
    normal = Writer(
        WriterSettings(db_url, ack_lane=False),
        load_rules(KEYS),
        TopicCache(TopicScheme()),
        lambda outcome: None,
        deliver=lambda conn, more: normal_effects.extend(more),
    )
    on_lane = _normalized(db_url, "cab-lane", _run(db_url, "cab-lane", lane, lane_effects))
    on_normal = _normalized(db_url, "cab-norm", _run(db_url, "cab-norm", normal, normal_effects))
    assert on_lane == on_normal
    # The scenario does what it says (so the comparison compares something).
    assert on_lane["alerts"] == [
        ("a0", "c1", "command_failed", "test", 1, False),
        ("a1", "c2", "unlock_failed", "command k1: not_opened", 2, False),
        ("a2", "c1", "command_failed", "command k2: failed (jammed)", 1, False),
        ("a3", "c2", "unlock_failed", "command k6: not_opened (blocked)", 1, False),
        ("a4", "c2", "command_failed", "test", 1, False),
        ("a5", "c1", "command_failed", "test", 1, False),
        ("a6", "c1", "unlock_failed", "command k7: not_opened", 1, True),
    ]
    assert [e[:2] for e in on_lane["effects"]] == [
        (["a2"], ["a0", "a2"]),
        (["a3"], ["a1"]),
        (["a6"], ["a5", "a3", "a4"]),
    ]
    assert "command k5 rejected by CAB: expired" in on_lane["log"]
    assert on_lane["log"].count("ack for command k4 of CAB ignored (unknown or final)") == 1
