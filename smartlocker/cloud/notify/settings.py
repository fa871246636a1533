"""Which channels the worker has, from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

from .channels import (
    Channel,
    LogChannel,
    ProviderWebhookChannel,
    SmtpChannel,
    SubscriptionWebhookChannel,
)

__all__ = ["channels_from_env"]


def channels_from_env(env: Mapping[str, str] | None = None) -> dict[str, Channel]:
    """Build the channels that are configured; a message for any other one goes dead.

    ``SMARTLOCKER_SMTP_URL`` (+ ``SMARTLOCKER_MAIL_FROM``) → email;
    ``SMARTLOCKER_SMS_WEBHOOK_URL`` / ``SMARTLOCKER_PUSH_WEBHOOK_URL`` (+
    ``SMARTLOCKER_PROVIDER_WEBHOOK_SECRET``) → sms / push; operator webhooks and
    the development ``log`` channel are always there.
    """
    env = os.environ if env is None else env
    channels: dict[str, Channel] = {"log": LogChannel(), "webhook": SubscriptionWebhookChannel()}
    if env.get("SMARTLOCKER_SMTP_URL"):
        sender = env.get("SMARTLOCKER_MAIL_FROM", "lockers@localhost")
        channels["email"] = SmtpChannel(env["SMARTLOCKER_SMTP_URL"], sender)
    secret = env.get("SMARTLOCKER_PROVIDER_WEBHOOK_SECRET", "")
    for kind in ("sms", "push"):
        url = env.get(f"SMARTLOCKER_{kind.upper()}_WEBHOOK_URL")
        if url:
            if not secret:
                raise ValueError(
                    "SMARTLOCKER_PROVIDER_WEBHOOK_SECRET is needed for provider webhooks"
                )
            channels[kind] = ProviderWebhookChannel(kind, url, secret)
    return channels
