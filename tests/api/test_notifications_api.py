"""Notifications through the API: preferences, the delivery log with dead letters and
their reason, and webhook subscriptions whose deliveries verify with the secret."""

from __future__ import annotations

import json
import time

import psycopg

from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.notify import (
    SIGNATURE_HEADER,
    NotificationWorker,
    ProviderWebhookChannel,
    RetryPolicy,
    SubscriptionWebhookChannel,
    verify_webhook,
)
from smartlocker.cloud.rules.parcels import record_deposit
from smartlocker.protocol import utcnow
from tests.support.receivers import HttpSink

from .conftest import World


def _drain(url: str, worker: NotificationWorker, rounds: int = 20) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(rounds):
            worker.run_once(conn)
            time.sleep(0.02)


def test_a_failing_provider_ends_dead_with_its_reason_visible_in_the_api(
    world: World, cloud_keys: CloudKeys
) -> None:
    c = world.client
    parcel = c.post(
        "/api/v1/parcels",
        json={
            "size": "s",
            "cabinet": "cab-1",
            "recipient": "+4915100000001",
            "notify_channel": "sms",
            "locale": "de",
        },
        headers=world.key("courier"),
    ).json
    assert (parcel["notify_channel"], parcel["locale"]) == ("sms", "de")
    with psycopg.connect(world.url, autocommit=True) as conn:
        record_deposit(conn, cloud_keys, parcel["id"], now=utcnow(), actor="test")
    policy = RetryPolicy(first_delay_s=0.01, max_delay_s=0.01, max_attempts=3, jitter=0.0)
    with HttpSink() as provider:
        provider.status = 503
        channel = ProviderWebhookChannel("sms", provider.url, "provider-secret")
        _drain(world.url, NotificationWorker(world.url, {"sms": channel}, policy=policy))
    dead = c.get("/api/v1/notifications?status=dead", headers=world.key("operator")).json
    (item,) = dead["items"]
    assert (item["parcel"], item["topic"], item["channel"]) == (parcel["id"], "code_issued", "sms")
    assert (item["last_error"], item["attempts"], item["response_status"]) == ("HTTP 503", 3, 503)
    assert "code" not in json.dumps(item).replace("code_issued", "")
    # another site's operator sees none of it; a viewer may not read the log at all
    assert c.get("/api/v1/notifications", headers=world.key("operator", "s2")).json["items"] == []
    assert c.get("/api/v1/notifications", headers=world.key("viewer")).status_code == 403
    # the recipient fixes their contact; a resent code goes the new way
    patched = c.patch(
        f"/api/v1/parcels/{parcel['id']}/recipient",
        json={"notify_channel": "email", "recipient": "ann@example.test"},
        headers=world.key("courier"),
    )
    assert patched.status_code == 200, patched.json
    resent = c.post(f"/api/v1/parcels/{parcel['id']}/resend-code", headers=world.key("operator"))
    assert resent.status_code == 202
    log = c.get(f"/api/v1/notifications?parcel={parcel['id']}", headers=world.key("operator"))
    newest = log.json["items"][0]
    assert (newest["id"], newest["channel"], newest["destination"]) == (
        resent.json["notification"],
        "email",
        "ann@example.test",
    )


def test_webhook_subscriptions_deliver_signed_events(world: World, cloud_keys: CloudKeys) -> None:
    c = world.client
    refused = c.post(
        "/api/v1/webhooks",
        json={"site": "s1", "url": "http://127.0.0.1:9/x", "event_types": ["parcel.exploded"]},
        headers=world.key("operator"),
    )
    assert refused.status_code == 422
    with HttpSink() as sink:
        created = c.post(
            "/api/v1/webhooks",
            json={"site": "s1", "url": sink.url, "event_types": ["parcel.reserved"]},
            headers=world.key("operator"),
        )
        assert created.status_code == 201, created.json
        secret = created.json["secret"]
        listed = c.get("/api/v1/webhooks", headers=world.key("operator")).json["items"]
        assert [w["id"] for w in listed] == [created.json["id"]]
        assert "secret" not in listed[0]
        c.post(
            "/api/v1/parcels", json={"size": "s", "cabinet": "cab-1"}, headers=world.key("courier")
        )
        worker = NotificationWorker(world.url, {"webhook": SubscriptionWebhookChannel()})
        _drain(world.url, worker, rounds=3)
        ((headers, body),) = sink.received()
    verify_webhook(secret, headers[SIGNATURE_HEADER], body, now=time.time())
    assert json.loads(body)["type"] == "parcel.reserved"
    stopped = c.delete(f"/api/v1/webhooks/{created.json['id']}", headers=world.key("operator"))
    assert stopped.json["active"] is False
