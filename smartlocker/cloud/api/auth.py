"""API keys: ``slk_<id>_<secret>``, stored as SHA-256 of the secret, with a role and sites.

Keys are 256-bit random secrets, so a fast hash is enough (nobody can brute-force
2^256); the comparison is constant-time. A key is limited to a list of sites or
reaches all of them (``sites`` NULL). Every query of the API is filtered with
:meth:`Principal.site_filter`, so objects of another site are simply not found.
A verified key is remembered for a couple of seconds (:mod:`.keycache`), which is
how long a revocation may take to reach a worker that had just seen the key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from flask import current_app, g
from psycopg import sql

from .db import get_conn
from .errors import NotFound, Unauthorized
from .keycache import KeyCache

__all__ = [
    "KEY_PREFIX",
    "CreatedKey",
    "Principal",
    "Role",
    "authenticate",
    "create_key",
    "current_principal",
    "hash_secret",
    "parse_key",
    "set_principal",
]

KEY_PREFIX = "slk"
_KEY_RE = re.compile(r"^slk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    COURIER = "courier"
    VIEWER = "viewer"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: one API key's id, role and site scope (None: every site)."""

    key_id: str
    name: str
    role: Role
    sites: frozenset[str] | None

    @property
    def all_sites(self) -> bool:
        return self.sites is None

    def may_see(self, site: str) -> bool:
        return self.sites is None or site in self.sites

    def require_site(self, site: str) -> None:
        """404 (not 403: existence is not leaked) for a site outside the key's scope."""
        if not self.may_see(site):
            raise NotFound(f"no such site: {site!r}")

    def site_filter(self, column: str) -> tuple[sql.Composable, list[Any]]:
        """A WHERE fragment limiting ``column`` (a site id column) to the key's sites."""
        if self.sites is None:
            return sql.SQL("TRUE"), []
        return sql.SQL("{} = ANY(%s)").format(sql.Identifier(*column.split("."))), [
            sorted(self.sites)
        ]

    @property
    def actor(self) -> str:
        """How the audit trail names this caller."""
        return f"apikey:{self.key_id}"


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: ``token`` is shown once and never stored."""

    key_id: str
    token: str
    name: str
    role: Role
    sites: frozenset[str] | None
    created_at: datetime


def hash_secret(secret: str) -> str:
    """SHA-256 (hex) of a key's secret part, as ``api_keys.secret_hash`` stores it."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def parse_key(token: str) -> tuple[str, str]:
    """``(key id, secret)`` of a well-formed key; raises :class:`Unauthorized`."""
    match = _KEY_RE.fullmatch(token)
    if match is None:
        raise Unauthorized("malformed API key")
    return match[1], match[2]


def create_key(
    conn: psycopg.Connection[Any], *, name: str, role: Role, sites: Sequence[str] | None
) -> CreatedKey:
    """Store a new key (its hash) and return the token, to be shown once."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    site_list = None if sites is None else sorted(set(sites))
    row = conn.execute(
        "INSERT INTO api_keys (id, name, role, sites, secret_hash)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING created_at",
        (key_id, name, role.value, site_list, hash_secret(secret)),
    ).fetchone()
    assert row is not None
    return CreatedKey(
        key_id=key_id,
        token=f"{KEY_PREFIX}_{key_id}_{secret}",
        name=name,
        role=role,
        sites=None if site_list is None else frozenset(site_list),
        created_at=row[0],
    )


def authenticate(header: str | None, cache: KeyCache | None = None) -> Principal:
    """The principal of an ``Authorization: Bearer slk_…`` header, or 401.

    ``cache`` defaults to the app's (``ApiState.key_cache``), if it has one.
    """
    if not header:
        raise Unauthorized("send Authorization: Bearer <api key>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send Authorization: Bearer <api key>")
    key_id, secret = parse_key(token.strip())
    digest = hash_secret(secret)
    if cache is None:
        cache = getattr(current_app.extensions.get("smartlocker"), "key_cache", None)
    cached = cache.get(key_id) if cache is not None else None
    if cached is not None and hmac.compare_digest(digest, cached[0]):
        return cached[1]
    row = (
        get_conn()
        .execute(
            "SELECT name, role, sites, secret_hash FROM api_keys"
            " WHERE id = %s AND revoked_at IS NULL",
            (key_id,),
        )
        .fetchone()
    )
    # Hashed even when the id is unknown (above), so timing does not tell ids apart.
    stored = row[3] if row is not None else "0" * 64
    if row is None or not hmac.compare_digest(digest, stored):
        raise Unauthorized("unknown or revoked API key")
    name, role, sites, _ = row
    principal = Principal(
        key_id=key_id,
        name=name,
        role=Role(role),
        sites=None if sites is None else frozenset(sites),
    )
    if cache is not None:
        cache.put(key_id, stored, principal)
    return principal


def set_principal(principal: Principal) -> None:
    g.principal = principal


def current_principal() -> Principal:
    principal: Principal | None = g.get("principal")
    if principal is None:
        raise Unauthorized()
    return principal
