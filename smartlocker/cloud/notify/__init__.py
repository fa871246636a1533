"""Notifications and operator webhooks through a transactional outbox.

State changes enqueue outbound messages in their own transaction
(:mod:`.outbox`); :class:`.worker.NotificationWorker` delivers them through
:mod:`.channels` with retries, backoff and a dead-letter state.
"""

from .channels import (
    Channel,
    DeliveryError,
    LogChannel,
    Outbound,
    ProviderWebhookChannel,
    SmtpChannel,
    SubscriptionWebhookChannel,
)
from .outbox import (
    RetryPolicy,
    claim_due,
    enqueue_event,
    enqueue_notification,
    list_messages,
    mark_failed,
    mark_sent,
)
from .settings import channels_from_env
from .templates import LOCALES, NotificationKind, render
from .webhook_signing import SIGNATURE_HEADER, WebhookSignatureError, sign_webhook, verify_webhook
from .worker import NotificationWorker

__all__ = [
    "LOCALES",
    "SIGNATURE_HEADER",
    "Channel",
    "DeliveryError",
    "LogChannel",
    "NotificationKind",
    "NotificationWorker",
    "Outbound",
    "ProviderWebhookChannel",
    "RetryPolicy",
    "SmtpChannel",
    "SubscriptionWebhookChannel",
    "WebhookSignatureError",
    "channels_from_env",
    "claim_due",
    "enqueue_event",
    "enqueue_notification",
    "list_messages",
    "mark_failed",
    "mark_sent",
    "render",
    "sign_webhook",
    "verify_webhook",
]
