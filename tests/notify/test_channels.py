"""Channels against real local receivers: SMTP (aiosmtpd) and an HTTP endpoint."""

from __future__ import annotations

import json
import time

import pytest

from smartlocker.cloud.notify import (
    SIGNATURE_HEADER,
    DeliveryError,
    NotificationKind,
    Outbound,
    ProviderWebhookChannel,
    SmtpChannel,
    SubscriptionWebhookChannel,
    WebhookSignatureError,
    render,
    verify_webhook,
)
from smartlocker.cloud.notify.qr import qr_png
from tests.support.receivers import HttpSink, SmtpSink

VALUES = {
    "reference": "REF-1",
    "cabinet": "cab-1",
    "compartment": "A1",
    "deadline": "2026-11-28 18:00",
}


def _outbound(**overrides: object) -> Outbound:
    fields: dict[str, object] = {
        "id": 7,
        "channel": "email",
        "topic": "code_issued",
        "destination": "ann@example.test",
        "locale": "en",
        "site": "site-a",
        "parcel": "p1",
        "payload": VALUES,
        "secret_payload": {"code": "12345678"},
        "attempt": 1,
        "created_at": "2026-11-21T10:00:00+00:00",
    }
    fields.update(overrides)
    return Outbound(**fields)  # type: ignore[arg-type]


def test_email_has_the_code_in_text_and_as_a_qr_image() -> None:
    with SmtpSink() as sink:
        SmtpChannel(sink.url, "lockers@example.test").send(_outbound(), time.time())
        (mail,) = sink.messages
    assert mail["Subject"] == "Your parcel REF-1 is ready for pickup"
    assert mail["Message-ID"] == "<smartlocker-7@example.test>"
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    assert "Pickup code: 12345678" in body.get_content()
    (image,) = [part for part in mail.iter_attachments()]
    assert image.get_content_type() == "image/png"
    assert image.get_content() == qr_png("12345678")


def test_every_locale_renders_every_kind() -> None:
    from smartlocker.cloud.notify import LOCALES

    for locale in LOCALES:
        for kind in NotificationKind:
            text = render(kind, locale, {**VALUES, "code": "12345678"})
            assert "REF-1" in text.subject + text.text


def test_a_template_hole_is_a_permanent_error() -> None:
    with pytest.raises(DeliveryError) as info:
        _outbound(payload={"reference": "REF-1"}).rendered()
    assert info.value.permanent


def test_unreachable_smtp_is_transient() -> None:
    from smartlocker.embedded.mosquitto import free_port

    channel = SmtpChannel(f"smtp://127.0.0.1:{free_port()}", "lockers@example.test", timeout=2)
    with pytest.raises(DeliveryError) as info:
        channel.send(_outbound(), time.time())
    assert not info.value.permanent


def test_operator_webhook_is_signed_and_a_replay_is_detectably_old() -> None:
    secret = "whsec-test"
    with HttpSink() as sink:
        message = _outbound(
            channel="webhook",
            topic="parcel.deposited",
            destination=sink.url,
            payload={"parcel": "p1"},
            secret_payload=None,
            subscription_secret=secret,
        )
        sent_at = time.time()
        assert SubscriptionWebhookChannel().send(message, sent_at) == 200
        ((headers, body),) = sink.received()
    assert headers["Smartlocker-Event"] == "parcel.deposited"
    assert json.loads(body)["data"] == {"parcel": "p1"}
    # The documented recipe (docs/notifications.md) verifies it ...
    t = verify_webhook(secret, headers[SIGNATURE_HEADER], body, now=sent_at + 1)
    assert t == int(sent_at)
    # ... a replay five minutes later is refused as old, and a forged body as wrong.
    with pytest.raises(WebhookSignatureError, match="old"):
        verify_webhook(secret, headers[SIGNATURE_HEADER], body, now=sent_at + 301)
    with pytest.raises(WebhookSignatureError, match="match"):
        verify_webhook(secret, headers[SIGNATURE_HEADER], body + b" ", now=sent_at)
    with pytest.raises(WebhookSignatureError, match="match"):
        verify_webhook("other", headers[SIGNATURE_HEADER], body, now=sent_at)


@pytest.mark.parametrize(
    ("status", "permanent"), [(500, False), (503, False), (429, False), (400, True), (404, True)]
)
def test_provider_answers_map_to_retry_or_dead(status: int, permanent: bool) -> None:
    with HttpSink() as sink:
        sink.status = status
        channel = ProviderWebhookChannel("sms", sink.url, "provider-secret")
        with pytest.raises(DeliveryError) as info:
            channel.send(_outbound(channel="sms", destination="+4912345"), time.time())
    assert info.value.permanent is permanent
    assert info.value.status == status
