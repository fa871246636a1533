"""Changing a site's settings, and storing a provisioned cabinet's credential hash.

(Written for the operator API; :mod:`.fleet` creates sites and cabinets.)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from ..errors import NotFound, ValidationFailed
from .fleet import audit

__all__ = ["SITE_FIELDS", "set_device_credentials", "update_site"]

#: What an operator may change on a site (its id never changes).
SITE_FIELDS = ("name", "timezone", "hold_hours", "reservation_hours")


def update_site(
    conn: psycopg.Connection[Any],
    site: str,
    changes: dict[str, Any],
    *,
    actor: str,
    now: datetime,
) -> None:
    """Apply ``changes`` (a subset of :data:`SITE_FIELDS`) and audit them."""
    unknown = set(changes) - set(SITE_FIELDS)
    if unknown:
        raise ValidationFailed(f"cannot change {sorted(unknown)} of a site")
    with conn.transaction():
        if changes:
            assignments = sql.SQL(", ").join(
                sql.SQL("{} = %s").format(sql.Identifier(name)) for name in changes
            )
            try:
                with conn.transaction():
                    cur = conn.execute(
                        sql.SQL("UPDATE sites SET {} WHERE id = %s").format(assignments),
                        [*changes.values(), site],
                    )
            except psycopg.errors.CheckViolation as exc:
                raise ValidationFailed(f"bad site settings: {exc.diag.message_primary}") from exc
            if cur.rowcount == 0:
                raise NotFound(f"no site {site}", site=site)
        elif conn.execute("SELECT 1 FROM sites WHERE id = %s", (site,)).fetchone() is None:
            raise NotFound(f"no site {site}", site=site)
        audit(
            conn,
            actor=actor,
            action="site.update",
            target_kind="site",
            target=site,
            now=now,
            detail=changes,
        )


def set_device_credentials(
    conn: psycopg.Connection[Any],
    cabinet: str,
    credentials_hash: str,
    *,
    actor: str,
    now: datetime,
) -> None:
    """Store the hash of the cabinet's MQTT password (never the password) and audit it."""
    cur = conn.execute(
        "UPDATE cabinets SET credentials_hash = %s WHERE id = %s", (credentials_hash, cabinet)
    )
    if cur.rowcount == 0:
        raise NotFound(f"no cabinet {cabinet}", cabinet=cabinet)
    audit(
        conn,
        actor=actor,
        action="cabinet.credentials",
        target_kind="cabinet",
        target=cabinet,
        now=now,
    )
