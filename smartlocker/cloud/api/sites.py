"""``/api/v1/sites``: locations."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from psycopg import sql

from smartlocker.cloud.rules.fleet import audit, create_site
from smartlocker.cloud.rules.site_settings import update_site

from .app import state
from .auth import current_principal
from .db import get_conn
from .errors import Forbidden, NotFound
from .models import SITE_ID_PATTERN, Site, SiteCreate, SiteList, SiteUpdate
from .pagination import PageQuery, decode_cursor, encode_cursor
from .roles import ADMIN, ANYONE
from .routing import operation

__all__ = ["bp"]

bp = Blueprint("sites", __name__)
_PATH = {"site": SITE_ID_PATTERN}
_COLUMNS = "id, name, timezone, hold_hours, reservation_hours, created_at"


def _site(row: Any) -> Site:
    return Site(
        id=row[0],
        name=row[1],
        timezone=row[2],
        hold_hours=row[3],
        reservation_hours=row[4],
        created_at=row[5],
    )


def load_site(site: str) -> Site:
    principal = current_principal()
    row = (
        get_conn()
        .execute(f"SELECT {_COLUMNS} FROM sites WHERE id = %s", (site,))  # noqa: S608
        .fetchone()
    )
    if row is None or not principal.may_see(site):
        raise NotFound(f"no site {site!r}")
    return _site(row)


@operation(
    bp, "GET", "/sites", summary="List sites", roles=ANYONE, query=PageQuery, response=SiteList
)
def list_sites(query: PageQuery) -> SiteList:
    """The sites the key reaches, by id."""
    principal = current_principal()
    scope, params = principal.site_filter("id")
    after = decode_cursor(query.cursor, [str])[0] if query.cursor else None
    rows = (
        get_conn()
        .execute(
            sql.SQL(
                "SELECT {} FROM sites WHERE {} AND (%s::text IS NULL OR id > %s)"
                " ORDER BY id LIMIT %s"
            ).format(sql.SQL(_COLUMNS), scope),
            [*params, after, after, query.limit + 1],
        )
        .fetchall()
    )
    items = [_site(r) for r in rows[: query.limit]]
    more = len(rows) > query.limit
    return SiteList(items=items, next_cursor=encode_cursor([items[-1].id]) if more else None)


@operation(
    bp,
    "POST",
    "/sites",
    summary="Create a site",
    roles=ADMIN,
    body=SiteCreate,
    response=Site,
    status=201,
    errors=(409, 422),
)
def create_site_view(body: SiteCreate) -> Site:
    """Only an admin key that reaches every site may create one."""
    principal = current_principal()
    if not principal.all_sites:
        raise Forbidden("a key limited to some sites cannot create sites")
    conn = get_conn()
    now = state().clock()
    with conn.transaction():
        create_site(
            conn,
            body.id,
            body.name,
            hold_hours=body.hold_hours,
            reservation_hours=body.reservation_hours,
            timezone=body.timezone,
        )
        audit(
            conn,
            actor=principal.actor,
            action="site.create",
            target_kind="site",
            target=body.id,
            now=now,
            detail=body.model_dump(mode="json"),
        )
    return load_site(body.id)


@operation(
    bp, "GET", "/sites/{site}", summary="Get a site", roles=ANYONE, path_params=_PATH, response=Site
)
def get_site(site: str) -> Site:
    return load_site(site)


@operation(
    bp,
    "PATCH",
    "/sites/{site}",
    summary="Change a site",
    roles=ADMIN,
    path_params=_PATH,
    body=SiteUpdate,
    response=Site,
    errors=(422,),
)
def patch_site(site: str, body: SiteUpdate) -> Site:
    """Name, timezone, hold and reservation hours; the id never changes."""
    principal = current_principal()
    load_site(site)
    update_site(
        get_conn(),
        site,
        body.model_dump(exclude_unset=True, exclude_none=True),
        actor=principal.actor,
        now=state().clock(),
    )
    return load_site(site)
