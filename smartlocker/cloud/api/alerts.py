"""``/api/v1/alerts``: forced open, held open, offline, fault, temperature … and their ack."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from psycopg import sql

from smartlocker.cloud.rules.alerts import ack_alert
from smartlocker.cloud.rules.fleet import audit

from .app import state
from .auth import current_principal
from .db import get_conn
from .models import Alert, AlertList, AlertQuery
from .pagination import decode_cursor, encode_cursor
from .roles import ANYONE, OPERATE
from .routing import operation
from .scope import alert_site

__all__ = ["bp"]

bp = Blueprint("alerts", __name__)
_COLUMNS = (
    "a.id, cab.site, a.cabinet, a.compartment, a.kind, a.detail, a.raised_at, a.last_seen_at,"
    " a.occurrences, a.cleared_at, a.acked_at, a.acked_by"
)
_FIELDS = [c.strip().split(".")[-1] for c in _COLUMNS.split(",")]


def _alert(row: Any) -> Alert:
    return Alert(**dict(zip(_FIELDS, row, strict=True)))


@operation(
    bp,
    "GET",
    "/alerts",
    summary="List alerts",
    roles=ANYONE,
    query=AlertQuery,
    response=AlertList,
)
def list_alerts(query: AlertQuery) -> AlertList:
    """Newest first; filter by site, cabinet, kind, open or cleared."""
    principal = current_principal()
    scope, params = principal.site_filter("cab.site")
    before = decode_cursor(query.cursor, [int])[0] if query.cursor else None
    rows = (
        get_conn()
        .execute(
            sql.SQL(
                "SELECT {} FROM alerts a JOIN cabinets cab ON cab.id = a.cabinet"
                " WHERE {} AND (%s::text IS NULL OR cab.site = %s)"
                " AND (%s::text IS NULL OR a.cabinet = %s) AND (%s::text IS NULL OR a.kind = %s)"
                " AND (%s::boolean IS NULL OR (a.cleared_at IS NULL) = %s)"
                " AND (%s::bigint IS NULL OR a.id < %s) ORDER BY a.id DESC LIMIT %s"
            ).format(sql.SQL(_COLUMNS), scope),
            [
                *params,
                query.site,
                query.site,
                query.cabinet,
                query.cabinet,
                query.kind,
                query.kind,
                query.open,
                query.open,
                before,
                before,
                query.limit + 1,
            ],
        )
        .fetchall()
    )
    items = [_alert(r) for r in rows[: query.limit]]
    more = len(rows) > query.limit
    return AlertList(items=items, next_cursor=encode_cursor([items[-1].id]) if more else None)


@operation(
    bp,
    "POST",
    "/alerts/{alert}/ack",
    summary="Acknowledge an alert",
    roles=OPERATE,
    path_params={"alert": r"^[1-9][0-9]{0,17}$"},
    response=Alert,
)
def ack(alert: str) -> Alert:
    """Acknowledging does not clear it; the first acknowledgement stays (audited)."""
    principal = current_principal()
    conn = get_conn()
    alert_id = int(alert)
    alert_site(conn, principal, alert_id)
    now = state().clock()
    with conn.transaction():
        ack_alert(conn, alert_id, actor=principal.actor, now=now)
        audit(
            conn,
            actor=principal.actor,
            action="alert.ack",
            target_kind="alert",
            target=str(alert_id),
            now=now,
        )
    row = conn.execute(
        sql.SQL(
            "SELECT {} FROM alerts a JOIN cabinets cab ON cab.id = a.cabinet WHERE a.id = %s"
        ).format(sql.SQL(_COLUMNS)),
        (alert_id,),
    ).fetchone()
    return _alert(row)
