"""The rules queue the right messages in the same transaction as each change, and
the worker delivers them: a deposit gives the recipient one message with a code
that opens the compartment; operators' webhooks hear of parcels, alerts, presence."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from smartlocker.cloud.downlink import build_desired_state
from smartlocker.cloud.errors import NotFound, ValidationFailed
from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.notify import (
    SIGNATURE_HEADER,
    LogChannel,
    NotificationWorker,
    SmtpChannel,
    SubscriptionWebhookChannel,
    list_messages,
    verify_webhook,
)
from smartlocker.cloud.reactions import Reactions
from smartlocker.cloud.rules import reserve_parcel
from smartlocker.cloud.rules.notifications import Preferences, set_preferences
from smartlocker.cloud.rules.presence import mark_offline, mark_online
from smartlocker.protocol import AlarmKind, CodeKind, hash_code
from tests.cloud.conftest import T0
from tests.cloud.test_reactions import Cabinet, deposit
from tests.support.receivers import HttpSink, SmtpSink

Conn = psycopg.Connection[Any]


@pytest.fixture
def reactions(keys: CloudKeys) -> Reactions:
    return Reactions(keys)


def _drain(conn: Conn, worker: NotificationWorker) -> None:
    while worker.run_once(conn):
        pass


def _topics(conn: Conn, channel: str) -> list[str]:
    return [m["topic"] for m in list_messages(conn, limit=500) if m["channel"] == channel]


def test_a_deposit_sends_exactly_one_email_whose_code_opens_the_compartment(
    conn: Conn, keys: CloudKeys, reactions: Reactions
) -> None:
    r = reserve_parcel(
        conn,
        keys,
        size="s",
        cabinet="cab-1",
        actor="api",
        now=T0,
        recipient="ann@example.test",
        reference="REF-7",
        preferences=Preferences(channel="email", locale="de"),
    )
    deposit(conn, reactions, Cabinet(), r.parcel, r.compartment)
    with SmtpSink() as sink:
        worker = NotificationWorker(conn.info.dsn, {"email": SmtpChannel(sink.url, "l@x.test")})
        _drain(conn, worker)
        _drain(conn, worker)  # a second pass sends nothing more
        (mail,) = sink.messages
    assert mail["To"] == "ann@example.test"
    assert mail["Subject"] == "Ihr Paket REF-7 liegt zur Abholung bereit"  # the recipient's locale
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    code = re.search(r"Abholcode: (\d{8,})", body.get_content())
    assert code is not None
    # The code in the message is the one the cabinet accepts offline for this compartment.
    desired = build_desired_state(conn, "cab-1")
    grants = {g.hash: g for g in desired.codes}
    grant = grants[hash_code(keys.code_key("cab-1"), code.group(1))]
    assert (grant.compartment, grant.kind, grant.parcel) == (
        r.compartment,
        CodeKind.PICKUP,
        r.parcel,
    )
    # ... and no clear code is left anywhere in the database.
    left = conn.execute("SELECT count(*) FROM outbound_messages WHERE secret_payload IS NOT NULL")
    assert left.fetchone() == (0,)


def test_transitions_alerts_and_presence_reach_the_sites_webhooks(
    conn: Conn, keys: CloudKeys, reactions: Reactions
) -> None:
    with HttpSink() as sink:
        conn.execute(
            "INSERT INTO webhook_subscriptions (site, url, secret, event_types) VALUES"
            " ('site-1', %s, 'whsec', %s), ('site-2', %s, 'other', %s)",
            (
                sink.url,
                [
                    "parcel.reserved",
                    "parcel.deposited",
                    "parcel.expired",
                    "alert.raised",
                    "alert.cleared",
                    "cabinet.offline",
                    "cabinet.online",
                ],
                sink.url,
                ["parcel.deposited"],
            ),
        )
        r = reserve_parcel(
            conn,
            keys,
            size="s",
            cabinet="cab-1",
            actor="api",
            now=T0,
            recipient="+49151",
            preferences=Preferences(channel="log"),
        )
        deposit(conn, reactions, Cabinet(), r.parcel, r.compartment)
        t = T0 + timedelta(hours=1)
        reactions.on_events(conn, [Cabinet().alarm(t, AlarmKind.FORCED_OPEN, True, "B1")], t)
        reactions.on_events(conn, [Cabinet().alarm(t, AlarmKind.FORCED_OPEN, False, "B1")], t)
        with conn.transaction():
            mark_offline(conn, "cab-1", at=t, now=t, why="heartbeats stopped")
        with conn.transaction():
            mark_online(conn, "cab-1", at=t + timedelta(seconds=5), now=t)
        reactions.on_tick(conn, T0 + timedelta(days=10))  # past the deadline → expired
        worker = NotificationWorker(
            conn.info.dsn, {"webhook": SubscriptionWebhookChannel(), "log": LogChannel()}
        )
        _drain(conn, worker)
        received = sink.received()
    bodies = []
    for headers, body in received:
        verify_webhook("whsec", headers[SIGNATURE_HEADER], body, now=time.time())
        bodies.append(json.loads(body))
    assert [b["type"] for b in bodies] == [
        "parcel.reserved",
        "parcel.deposited",
        "alert.raised",
        "alert.cleared",
        "alert.raised",  # the offline alert ...
        "cabinet.offline",  # ... and the presence change itself
        "alert.cleared",
        "cabinet.online",
        "parcel.expired",
    ]
    assert {b["site"] for b in bodies} == {"site-1"}
    assert bodies[1]["data"]["parcel"] == r.parcel
    # The recipient heard of the code and of the expiry (dev channel: the log).
    assert _topics(conn, "log") == ["code_issued", "expired"]


def test_reminder_once_per_deadline_and_again_after_an_extension(
    conn: Conn, keys: CloudKeys, reactions: Reactions
) -> None:
    from smartlocker.cloud.rules import extend_deadline

    r = reserve_parcel(
        conn,
        keys,
        size="s",
        cabinet="cab-1",
        actor="api",
        now=T0,
        recipient="+49151",
        deadline=T0 + timedelta(hours=8),
    )
    deposit(conn, reactions, Cabinet(), r.parcel, r.compartment)
    reactions.on_tick(conn, T0 + timedelta(hours=2))  # 6 h left of 8: too early
    assert _topics(conn, "log") == ["code_issued"]
    reactions.on_tick(conn, T0 + timedelta(hours=7))
    reactions.on_tick(conn, T0 + timedelta(hours=7, minutes=30))
    assert _topics(conn, "log") == ["code_issued", "reminder"]
    extend_deadline(
        conn, r.parcel, T0 + timedelta(hours=40), now=T0 + timedelta(hours=7), actor="support"
    )
    reactions.on_tick(conn, T0 + timedelta(hours=39))
    assert _topics(conn, "log") == ["code_issued", "reminder", "reminder"]


def test_preferences_are_checked_and_later_messages_follow_them(
    conn: Conn, keys: CloudKeys, reactions: Reactions
) -> None:
    with pytest.raises(ValidationFailed):
        Preferences(channel="pigeon")
    with pytest.raises(ValidationFailed):
        Preferences(locale="english")
    r = reserve_parcel(conn, keys, size="s", cabinet="cab-1", actor="api", now=T0)
    deposit(conn, reactions, Cabinet(), r.parcel, r.compartment)
    assert list_messages(conn) == []  # no contact yet: nothing to send the code to
    set_preferences(conn, r.parcel, recipient="bob@example.test", channel="email", locale="fr")
    from smartlocker.cloud.rules import resend_pickup_code

    assert resend_pickup_code(conn, keys, r.parcel, now=T0, actor="support") is not None
    (message,) = list_messages(conn)
    assert (message["channel"], message["destination"], message["locale"]) == (
        "email",
        "bob@example.test",
        "fr",
    )
    with pytest.raises(NotFound):
        set_preferences(conn, "nope", channel="sms")
