"""``/api/v1/notifications`` (the delivery log, dead letters included) and
``/api/v1/webhooks`` (operators' subscriptions to their sites' events)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from psycopg import sql

from smartlocker.cloud.rules.fleet import audit
from smartlocker.cloud.rules.notifications import subscribe_webhook, unsubscribe_webhook

from .app import state
from .auth import current_principal
from .db import get_conn
from .errors import NotFound
from .models import (
    OutboundList,
    OutboundMessage,
    OutboundQuery,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
)
from .pagination import PageQuery, decode_cursor, encode_cursor
from .roles import OPERATE
from .routing import operation
from .scope import visible_site

__all__ = ["bp"]

bp = Blueprint("notifications", __name__)
_MESSAGE_COLUMNS = (
    "id, created_at, channel, topic, destination, site, parcel, locale, status, attempts,"
    " next_attempt_at, last_error, response_status, sent_at"
)
_WEBHOOK_COLUMNS = "id, site, url, event_types, active, created_at"


def _columns(text: str) -> list[str]:
    return [c.strip() for c in text.split(",")]


@operation(
    bp,
    "GET",
    "/notifications",
    summary="The delivery log of messages and webhooks (with dead letters and their reason)",
    roles=OPERATE,
    query=OutboundQuery,
    response=OutboundList,
)
def list_notifications(query: OutboundQuery) -> OutboundList:
    """Newest first; ``status=dead`` lists what could not be delivered, and why."""
    principal = current_principal()
    scope, params = principal.site_filter("site")
    before = decode_cursor(query.cursor, [int])[0] if query.cursor else None
    rows = (
        get_conn()
        .execute(
            sql.SQL(
                "SELECT {} FROM outbound_messages WHERE {}"
                " AND (%s::text IS NULL OR status = %s) AND (%s::text IS NULL OR channel = %s)"
                " AND (%s::text IS NULL OR parcel = %s) AND (%s::text IS NULL OR site = %s)"
                " AND (%s::bigint IS NULL OR id < %s) ORDER BY id DESC LIMIT %s"
            ).format(sql.SQL(_MESSAGE_COLUMNS), scope),
            [
                *params,
                *(query.status, query.status),
                *(query.channel, query.channel),
                *(query.parcel, query.parcel),
                *(query.site, query.site),
                *(before, before),
                query.limit + 1,
            ],
        )
        .fetchall()
    )
    fields = _columns(_MESSAGE_COLUMNS)
    items = [OutboundMessage(**dict(zip(fields, r, strict=True))) for r in rows[: query.limit]]
    more = len(rows) > query.limit
    return OutboundList(items=items, next_cursor=encode_cursor([items[-1].id]) if more else None)


def _webhook(row: Any) -> dict[str, Any]:
    return dict(zip(_columns(_WEBHOOK_COLUMNS), row, strict=True))


@operation(
    bp,
    "GET",
    "/webhooks",
    summary="List operator webhook subscriptions",
    roles=OPERATE,
    query=PageQuery,
    response=WebhookList,
)
def list_webhooks(query: PageQuery) -> WebhookList:
    principal = current_principal()
    scope, params = principal.site_filter("site")
    after = decode_cursor(query.cursor, [int])[0] if query.cursor else None
    rows = (
        get_conn()
        .execute(
            sql.SQL(
                "SELECT {} FROM webhook_subscriptions WHERE {}"
                " AND (%s::bigint IS NULL OR id > %s) ORDER BY id LIMIT %s"
            ).format(sql.SQL(_WEBHOOK_COLUMNS), scope),
            [*params, after, after, query.limit + 1],
        )
        .fetchall()
    )
    items = [Webhook(**_webhook(r)) for r in rows[: query.limit]]
    more = len(rows) > query.limit
    return WebhookList(items=items, next_cursor=encode_cursor([items[-1].id]) if more else None)


@operation(
    bp,
    "POST",
    "/webhooks",
    summary="Subscribe a URL to a site's events (signed deliveries)",
    roles=OPERATE,
    body=WebhookCreate,
    response=WebhookCreated,
    status=201,
    errors=(404, 422),
)
def create_webhook(body: WebhookCreate) -> WebhookCreated:
    """The answer carries the signing secret, once (docs/notifications.md: verifying)."""
    principal = current_principal()
    conn = get_conn()
    visible_site(conn, principal, body.site)
    with conn.transaction():
        subscription, secret = subscribe_webhook(conn, body.site, body.url, body.event_types)
        audit(
            conn,
            actor=principal.actor,
            action="webhook.create",
            target_kind="webhook",
            target=str(subscription),
            now=state().clock(),
            detail={"site": body.site, "url": body.url, "event_types": body.event_types},
        )
    row = conn.execute(
        f"SELECT {_WEBHOOK_COLUMNS} FROM webhook_subscriptions WHERE id = %s",  # noqa: S608
        (subscription,),
    ).fetchone()
    return WebhookCreated(**_webhook(row), secret=secret)


@operation(
    bp,
    "DELETE",
    "/webhooks/{webhook}",
    summary="Stop a webhook subscription",
    roles=OPERATE,
    path_params={"webhook": r"^[0-9]{1,18}$"},
    response=Webhook,
)
def delete_webhook(webhook: str) -> Webhook:
    principal = current_principal()
    conn = get_conn()
    row = conn.execute(
        "SELECT site FROM webhook_subscriptions WHERE id = %s", (int(webhook),)
    ).fetchone()
    if row is None or not principal.may_see(row[0]):
        raise NotFound(f"no webhook {webhook!r}")
    with conn.transaction():
        unsubscribe_webhook(conn, int(webhook))
        audit(
            conn,
            actor=principal.actor,
            action="webhook.delete",
            target_kind="webhook",
            target=webhook,
            now=state().clock(),
        )
    found = conn.execute(
        f"SELECT {_WEBHOOK_COLUMNS} FROM webhook_subscriptions WHERE id = %s",  # noqa: S608
        (int(webhook),),
    ).fetchone()
    return Webhook(**_webhook(found))
