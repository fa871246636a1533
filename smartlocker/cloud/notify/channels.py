"""Channels that deliver outbound messages: SMTP, signed provider webhooks, log.

A channel either returns (delivered, maybe with a response status) or raises a
:class:`DeliveryError` saying whether trying again could help.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from .qr import qr_png
from .templates import NotificationKind, Rendered, render
from .webhook_signing import SIGNATURE_HEADER, sign_webhook

__all__ = [
    "Channel",
    "DeliveryError",
    "LogChannel",
    "Outbound",
    "ProviderWebhookChannel",
    "SmtpChannel",
    "SubscriptionWebhookChannel",
    "post_signed",
]

logger = logging.getLogger(__name__)


class DeliveryError(Exception):
    """Delivery failed; ``permanent`` means retrying cannot help."""

    def __init__(self, reason: str, *, permanent: bool, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.status = status


@dataclass(frozen=True, slots=True)
class Outbound:
    """One claimed outbound message, as the worker hands it to a channel."""

    id: int
    channel: str
    topic: str
    destination: str
    locale: str
    site: str | None
    parcel: str | None
    payload: Mapping[str, Any]
    secret_payload: Mapping[str, Any] | None
    attempt: int
    created_at: str
    subscription_secret: str | None = None
    values: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", {**self.payload, **(self.secret_payload or {})})

    def rendered(self) -> Rendered:
        try:
            return render(NotificationKind(self.topic), self.locale, self.values)
        except (KeyError, ValueError) as exc:
            raise DeliveryError(
                f"cannot render {self.topic}: missing {exc}", permanent=True
            ) from exc


class Channel(Protocol):
    def send(self, message: Outbound, now: float) -> int | None: ...


class LogChannel:
    """For development: writes the message to the log instead of sending it."""

    def send(self, message: Outbound, now: float) -> int | None:
        text = message.rendered()
        logger.info(
            "notification %s to %s: %s\n%s",
            message.id,
            message.destination,
            text.subject,
            text.text,
        )
        return None


class SmtpChannel:
    """Email over SMTP: plain text, and the pickup code as a QR image when there is one."""

    def __init__(self, url: str, sender: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"SMTP URL must be smtp:// or smtps://host:port, not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.implicit_tls = parts.scheme == "smtps"
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender
        self.timeout = timeout

    def build(self, message: Outbound) -> EmailMessage:
        text = message.rendered()
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.destination
        mail["Subject"] = text.subject
        mail["Date"] = formatdate(usegmt=True)
        # Stable per outbox row: a resend after a crash is recognisable as the same message.
        mail["Message-ID"] = f"<smartlocker-{message.id}@{self.sender.rsplit('@', 1)[-1]}>"
        mail.set_content(text.text)
        code = message.values.get("code")
        if code:
            mail.add_attachment(
                qr_png(str(code)), maintype="image", subtype="png", filename="pickup-code.png"
            )
        return mail

    def send(self, message: Outbound, now: float) -> int | None:
        mail = self.build(message)
        try:
            smtp_cls = smtplib.SMTP_SSL if self.implicit_tls else smtplib.SMTP
            with smtp_cls(self.host, self.port, timeout=self.timeout) as smtp:
                if self.username and self.password:
                    if not self.implicit_tls:
                        smtp.starttls(context=ssl.create_default_context())
                    smtp.login(self.username, self.password)
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"recipient refused: {exc.recipients}", permanent=True) from exc
        except smtplib.SMTPResponseException as exc:
            permanent = 500 <= exc.smtp_code < 600
            raise DeliveryError(
                f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", permanent=permanent
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP unreachable: {exc}", permanent=False) from exc
        return 250


def post_signed(
    url: str, secret: str, body: bytes, headers: Mapping[str, str], now: float, timeout: float
) -> int:
    """POST ``body`` with a fresh signature; map the outcome to delivered or an error."""
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 - http(s) only
    if urlsplit(url).scheme not in ("http", "https"):
        raise DeliveryError(f"webhook URL must be http(s): {url!r}", permanent=True)
    request.add_header("Content-Type", "application/json")
    request.add_header(SIGNATURE_HEADER, sign_webhook(secret, int(now), body))
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        retry = exc.code in (408, 425, 429) or exc.code >= 500
        raise DeliveryError(f"HTTP {exc.code}", permanent=not retry, status=exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"receiver unreachable: {exc}", permanent=False) from None


class ProviderWebhookChannel:
    """SMS or app push through a provider that accepts signed JSON webhooks."""

    def __init__(self, kind: str, url: str, secret: str, *, timeout: float = 10.0) -> None:
        self.kind = kind
        self.url = url
        self.secret = secret
        self.timeout = timeout

    def send(self, message: Outbound, now: float) -> int | None:
        text = message.rendered()
        body = json.dumps(
            {
                "id": message.id,
                "kind": self.kind,
                "topic": message.topic,
                "parcel": message.parcel,
                "to": message.destination,
                "title": text.subject,
                "text": text.text,
                "locale": message.locale,
            },
            ensure_ascii=False,
        ).encode("utf-8")
        headers = {"Smartlocker-Delivery": str(message.id)}
        return post_signed(self.url, self.secret, body, headers, now, self.timeout)


class SubscriptionWebhookChannel:
    """Operator webhooks: the event as JSON, signed with the subscription's secret."""

    def __init__(self, *, timeout: float = 10.0) -> None:
        self.timeout = timeout

    def send(self, message: Outbound, now: float) -> int | None:
        if not message.subscription_secret:
            raise DeliveryError("the subscription is gone", permanent=True)
        body = json.dumps(
            {
                "id": message.id,
                "type": message.topic,
                "site": message.site,
                "created_at": message.created_at,
                "data": dict(message.payload),
            },
            ensure_ascii=False,
            sort_keys=True,
        ).encode("utf-8")
        headers = {"Smartlocker-Delivery": str(message.id), "Smartlocker-Event": message.topic}
        return post_signed(
            message.destination, message.subscription_secret, body, headers, now, self.timeout
        )
