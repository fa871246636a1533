"""Versioned, idempotent schema migrations from ``migrations/NNNN_name.sql``.

Each file runs once, in its own transaction, in name order; a session advisory
lock makes concurrent ``smartlocker db migrate`` runs wait for each other.
Files branch on the edition in SQL themselves (``DO`` blocks that test
``pg_extension``), so one schema serves plain PostgreSQL and TimescaleDB.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

__all__ = ["Migration", "available_migrations", "migrate"]

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
#: Arbitrary constant key for pg_advisory_lock: "smartlocker migrate".
_LOCK_KEY = 0x5A4C_0001


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """Every migration shipped with the package, in the order they apply."""
    found = []
    for entry in resources.files("smartlocker.cloud.db.migrations").iterdir():
        match = _NAME_RE.match(entry.name)
        if match:
            found.append(Migration(match[1], match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version: {versions}")
    return found


def migrate(url: str, *, upto: str | None = None) -> list[str]:
    """Apply what is missing; returns the versions applied now.

    ``upto`` stops after that version (tests build an older schema to upgrade).
    """
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in available_migrations():
                if upto is not None and migration.version > upto:
                    break
                if migration.version in done:
                    continue
                logger.info("applying migration %s_%s", migration.version, migration.name)
                with conn.transaction():
                    conn.execute(migration.sql.encode("utf-8"))
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied_now.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
