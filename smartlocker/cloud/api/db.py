"""One PostgreSQL connection per request, borrowed from the app's pool.

Connections are in autocommit mode: a view opens ``with conn.transaction():``
for its unit of work, so that what must survive a failed request (a rate-limit
counter, a wrong-code attempt) can be committed on its own.
"""

from __future__ import annotations

from typing import Any

import psycopg
from flask import current_app, g
from psycopg_pool import ConnectionPool

__all__ = ["close_conn", "get_conn", "make_pool", "pool"]


def make_pool(url: str, *, min_size: int, max_size: int) -> ConnectionPool[Any]:
    """A pool that opens in the background (a worker starts even if the DB is down)."""
    p: ConnectionPool[Any] = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True},
        open=False,
        name="smartlocker-api",
        timeout=10.0,
    )
    p.open(wait=False)
    return p


def pool() -> ConnectionPool[Any]:
    p: ConnectionPool[Any] = current_app.extensions["smartlocker"].pool
    return p


def get_conn() -> psycopg.Connection[Any]:
    """The request's connection (taken from the pool on first use)."""
    conn: psycopg.Connection[Any] | None = g.get("db_conn")
    if conn is None:
        conn = pool().getconn()
        g.db_conn = conn
    return conn


def close_conn(_exc: BaseException | None = None) -> None:
    """Give the request's connection back (teardown)."""
    conn: psycopg.Connection[Any] | None = g.pop("db_conn", None)
    if conn is not None:
        pool().putconn(conn)
