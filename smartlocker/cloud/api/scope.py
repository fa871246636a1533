"""Site-scoped lookups: an object outside the key's sites is "not found", never "forbidden".

Every handler that touches one object goes through here first, so a key of site A
cannot see, open or change anything of site B, nor learn that it exists.
"""

from __future__ import annotations

from typing import Any

import psycopg

from .auth import Principal
from .errors import NotFound

__all__ = ["alert_site", "cabinet_site", "command_site", "parcel_site", "visible_site"]


def visible_site(conn: psycopg.Connection[Any], principal: Principal, site: str) -> None:
    if not principal.may_see(site) or (
        conn.execute("SELECT 1 FROM sites WHERE id = %s", (site,)).fetchone() is None
    ):
        raise NotFound(f"no site {site!r}")


def _scoped(principal: Principal, row: Any, what: str, name: object) -> str:
    if row is None or not principal.may_see(row[0]):
        raise NotFound(f"no {what} {name!r}")
    site: str = row[0]
    return site


def cabinet_site(conn: psycopg.Connection[Any], principal: Principal, cabinet: str) -> str:
    row = conn.execute("SELECT site FROM cabinets WHERE id = %s", (cabinet,)).fetchone()
    return _scoped(principal, row, "cabinet", cabinet)


def parcel_site(conn: psycopg.Connection[Any], principal: Principal, parcel: str) -> str:
    row = conn.execute("SELECT site FROM parcels WHERE id = %s", (parcel,)).fetchone()
    return _scoped(principal, row, "parcel", parcel)


def command_site(conn: psycopg.Connection[Any], principal: Principal, command: str) -> str:
    row = conn.execute(
        "SELECT cab.site FROM commands c JOIN cabinets cab ON cab.id = c.cabinet WHERE c.id = %s",
        (command,),
    ).fetchone()
    return _scoped(principal, row, "command", command)


def alert_site(conn: psycopg.Connection[Any], principal: Principal, alert: int) -> str:
    row = conn.execute(
        "SELECT cab.site FROM alerts a JOIN cabinets cab ON cab.id = a.cabinet WHERE a.id = %s",
        (alert,),
    ).fetchone()
    return _scoped(principal, row, "alert", alert)
