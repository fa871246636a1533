"""``/api/v1/parcels``: the parcel lifecycle, through cloud-core's rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from flask import Blueprint
from psycopg import sql

from smartlocker.cloud.rules.fleet import audit
from smartlocker.cloud.rules.notifications import Preferences, set_preferences
from smartlocker.cloud.rules.openings import WrongCode, check_pickup_code, parcel_opening
from smartlocker.cloud.rules.parcels import (
    cancel_parcel,
    extend_deadline,
    resend_pickup_code,
    reserve_parcel,
)

from .app import state
from .auth import Principal, current_principal
from .cabinets import republish
from .db import get_conn
from .errors import NotFound
from .models import (
    PARCEL_ID_PATTERN,
    Command,
    Parcel,
    ParcelCreate,
    ParcelDetail,
    ParcelExtend,
    ParcelHistoryEntry,
    ParcelList,
    ParcelQuery,
    ParcelReserved,
    PickupRequest,
    RecipientUpdate,
    ResendResult,
    WaitQuery,
)
from .pagination import decode_cursor, encode_cursor
from .roles import ANYONE, OPERATE, PARCELS
from .routing import operation
from .scope import cabinet_site, parcel_site, visible_site
from .unlock import open_compartment

__all__ = ["bp"]

bp = Blueprint("parcels", __name__)
_PATH = {"parcel": PARCEL_ID_PATTERN}
_COLUMNS = (
    "id, site, cabinet, compartment, direction, size, state, reference, recipient,"
    " notify_channel, locale, deadline,"
    " reserved_at, deposited_at, picked_up_at, expired_at, closed_at, fee::text, fee_currency,"
    " created_by"
)
_FIELDS = [c.strip().removesuffix("::text") for c in _COLUMNS.split(",")]
_OPENED = {200: ("The command is final (only with `wait`)", Command)}


def _fields(row: Any) -> dict[str, Any]:
    return dict(zip(_FIELDS, row, strict=True))


def _load(conn: psycopg.Connection[Any], parcel: str) -> dict[str, Any]:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM parcels WHERE id = %s",  # noqa: S608
        (parcel,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no parcel {parcel!r}")
    return _fields(row)


def _scoped(parcel: str) -> tuple[psycopg.Connection[Any], Principal]:
    conn = get_conn()
    principal = current_principal()
    parcel_site(conn, principal, parcel)
    return conn, principal


@operation(
    bp,
    "GET",
    "/parcels",
    summary="List parcels",
    roles=ANYONE,
    query=ParcelQuery,
    response=ParcelList,
)
def list_parcels(query: ParcelQuery) -> ParcelList:
    """Newest first; filter by site, cabinet, state, reference, recipient."""
    principal = current_principal()
    scope, params = principal.site_filter("site")
    after: list[Any] = (
        decode_cursor(query.cursor, [datetime, str]) if query.cursor else [None, None]
    )
    rows = (
        get_conn()
        .execute(
            sql.SQL(
                "SELECT {} FROM parcels WHERE {}"
                " AND (%s::text IS NULL OR site = %s) AND (%s::text IS NULL OR cabinet = %s)"
                " AND (%s::text IS NULL OR state = %s) AND (%s::text IS NULL OR reference = %s)"
                " AND (%s::text IS NULL OR recipient = %s)"
                " AND (%s::timestamptz IS NULL OR (reserved_at, id) < (%s, %s))"
                " ORDER BY reserved_at DESC, id DESC LIMIT %s"
            ).format(sql.SQL(_COLUMNS), scope),
            [
                *params,
                query.site,
                query.site,
                query.cabinet,
                query.cabinet,
                query.state,
                query.state,
                query.reference,
                query.reference,
                query.recipient,
                query.recipient,
                after[0],
                after[0],
                after[1],
                query.limit + 1,
            ],
        )
        .fetchall()
    )
    items = [Parcel(**_fields(r)) for r in rows[: query.limit]]
    more = len(rows) > query.limit
    cursor = encode_cursor([items[-1].reserved_at, items[-1].id]) if more else None
    return ParcelList(items=items, next_cursor=cursor)


@operation(
    bp,
    "POST",
    "/parcels",
    summary="Reserve a compartment for a parcel",
    roles=PARCELS,
    body=ParcelCreate,
    response=ParcelReserved,
    status=201,
    errors=(404, 409, 422, 503),
)
def reserve(body: ParcelCreate) -> ParcelReserved:
    """Allocates the smallest free compartment that fits, at the site or the cabinet.

    The answer carries the deposit code, once; the cabinet gets its hash in its
    signed desired state."""
    principal = current_principal()
    s = state()
    conn = get_conn()
    if body.cabinet is not None:
        site = cabinet_site(conn, principal, body.cabinet)
        if body.site is not None and body.site != site:
            raise NotFound(f"no cabinet {body.cabinet!r} at site {body.site!r}")
    else:
        assert body.site is not None
        visible_site(conn, principal, body.site)
    reservation = reserve_parcel(
        conn,
        s.require_keys(),
        size=body.size,
        actor=principal.actor,
        now=s.clock(),
        site=body.site,
        cabinet=body.cabinet,
        temperature=body.temperature,
        direction=body.direction,
        recipient=body.recipient,
        reference=body.reference,
        deadline=body.deadline,
        parcel=body.id,
        preferences=Preferences(
            channel=body.notify_channel,
            locale=body.locale,
            courier_contact=body.courier_contact,
            courier_channel=body.courier_channel,
        ),
    )
    republish(conn, reservation.cabinet)
    return ParcelReserved(
        **_load(conn, reservation.parcel),
        deposit_code=reservation.deposit_code,
        deposit_code_valid_until=reservation.deposit_code_valid_until,
    )


@operation(
    bp,
    "GET",
    "/parcels/{parcel}",
    summary="Get a parcel and its history",
    roles=ANYONE,
    path_params=_PATH,
    response=ParcelDetail,
)
def get_parcel(parcel: str) -> ParcelDetail:
    conn, _ = _scoped(parcel)
    # One snapshot for the parcel and its history: a transition committed between the
    # two reads would otherwise show a state its history does not have yet.
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        fields = _load(conn, parcel)
        history = [
            ParcelHistoryEntry(at=r[0], from_state=r[1], to_state=r[2], actor=r[3], cause=r[4])
            for r in conn.execute(
                "SELECT at, from_state, to_state, actor, cause FROM parcel_history"
                " WHERE parcel = %s ORDER BY id",
                (parcel,),
            )
        ]
    return ParcelDetail(**fields, history=history)


def _open(parcel: str, purpose: str, wait: float | None) -> tuple[Command, int]:
    conn, principal = _scoped(parcel)
    cabinet, compartment = parcel_opening(conn, parcel, purpose)
    return open_compartment(
        conn,
        principal,
        cabinet,
        compartment,
        purpose=purpose,
        reason=f"{purpose} of parcel {parcel}",
        parcel=parcel,
        wait=wait,
    )


@operation(
    bp,
    "POST",
    "/parcels/{parcel}/deposit",
    summary="Open the reserved compartment for the courier",
    roles=PARCELS,
    path_params=_PATH,
    query=WaitQuery,
    response=Command,
    status=202,
    errors=(409, 429, 503),
    extra_responses=_OPENED,
)
def deposit(parcel: str, query: WaitQuery) -> tuple[Command, int]:
    """The parcel becomes ``deposited`` when the door closes again (pickup code issued)."""
    return _open(parcel, "deposit", query.wait)


@operation(
    bp,
    "POST",
    "/parcels/{parcel}/pickup",
    summary="Open with the recipient's code (app flow)",
    roles=PARCELS,
    path_params=_PATH,
    query=WaitQuery,
    body=PickupRequest,
    response=Command,
    status=202,
    errors=(409, 422, 429, 503),
    extra_responses=_OPENED,
)
def pickup(parcel: str, body: PickupRequest, query: WaitQuery) -> tuple[Command, int]:
    """Wrong codes are throttled per parcel and per API key, as at the kiosk."""
    conn, principal = _scoped(parcel)
    s = state()
    subjects = [f"parcel:{parcel}", f"key:{principal.key_id}"]
    now = s.clock()
    s.throttle.check(conn, subjects, now)
    try:
        cabinet, compartment = check_pickup_code(conn, s.require_keys(), parcel, body.code, now=now)
    except WrongCode:
        s.throttle.failed(conn, subjects, now)
        raise
    s.throttle.succeeded(conn, subjects)
    return open_compartment(
        conn,
        principal,
        cabinet,
        compartment,
        purpose="pickup",
        reason=f"pickup of parcel {parcel} (app)",
        parcel=parcel,
        wait=query.wait,
    )


@operation(
    bp,
    "POST",
    "/parcels/{parcel}/return",
    summary="Open an expired parcel's compartment to take it back",
    roles=PARCELS,
    path_params=_PATH,
    query=WaitQuery,
    response=Command,
    status=202,
    errors=(409, 429, 503),
    extra_responses=_OPENED,
)
def return_parcel(parcel: str, query: WaitQuery) -> tuple[Command, int]:
    """The parcel becomes ``returned`` when the door closes again."""
    return _open(parcel, "return", query.wait)


@operation(
    bp,
    "POST",
    "/parcels/{parcel}/cancel",
    summary="Cancel a reservation",
    roles=PARCELS,
    path_params=_PATH,
    response=Parcel,
    errors=(409,),
)
def cancel(parcel: str) -> Parcel:
    conn, principal = _scoped(parcel)
    transition = cancel_parcel(conn, parcel, now=state().clock(), actor=principal.actor)
    republish(conn, transition.cabinet)
    return Parcel(**_load(conn, parcel))


@operation(
    bp,
    "POST",
    "/parcels/{parcel}/extend",
    summary="Move the pickup deadline later",
    roles=OPERATE,
    path_params=_PATH,
    body=ParcelExtend,
    response=Parcel,
    errors=(422,),
)
def extend(parcel: str, body: ParcelExtend) -> Parcel:
    conn, principal = _scoped(parcel)
    extend_deadline(conn, parcel, body.deadline, now=state().clock(), actor=principal.actor)
    fields = _load(conn, parcel)
    republish(conn, fields["cabinet"])
    return Parcel(**fields)


@operation(
    bp,
    "POST",
    "/parcels/{parcel}/resend-code",
    summary="Issue a fresh pickup code to the recipient",
    roles=OPERATE,
    path_params=_PATH,
    response=ResendResult,
    status=202,
    errors=(422, 503),
)
def resend_code(parcel: str) -> ResendResult:
    """The old code stops working; the new one goes out through the notification outbox."""
    conn, principal = _scoped(parcel)
    s = state()
    note = resend_pickup_code(conn, s.require_keys(), parcel, now=s.clock(), actor=principal.actor)
    republish(conn, _load(conn, parcel)["cabinet"])
    return ResendResult(parcel=parcel, notification=note)


@operation(
    bp,
    "PATCH",
    "/parcels/{parcel}/recipient",
    summary="Change where and how the recipient is told",
    roles=PARCELS,
    path_params=_PATH,
    body=RecipientUpdate,
    response=Parcel,
    errors=(422,),
)
def update_recipient(parcel: str, body: RecipientUpdate) -> Parcel:
    """Later messages (a resent code, reminders, expiry) follow the new preferences."""
    conn, principal = _scoped(parcel)
    with conn.transaction():
        set_preferences(
            conn,
            parcel,
            recipient=body.recipient,
            channel=body.notify_channel,
            locale=body.locale,
        )
        audit(
            conn,
            actor=principal.actor,
            action="parcel.recipient",
            target_kind="parcel",
            target=parcel,
            now=state().clock(),
            detail=body.model_dump(exclude_none=True, exclude={"recipient"}),
        )
    return Parcel(**_load(conn, parcel))
