"""``smartlocker db``: schema migrations."""

from __future__ import annotations

import logging

import click
import psycopg

from smartlocker.cloud.db import detect_edition, migrate

__all__ = ["db"]

logger = logging.getLogger(__name__)


@click.group()
def db() -> None:
    """The cloud database."""


@db.command("migrate")
@click.option(
    "--database-url",
    envvar="SMARTLOCKER_DATABASE_URL",
    required=True,
    help="postgresql://… (env SMARTLOCKER_DATABASE_URL)",
)
def migrate_cmd(database_url: str) -> None:
    """Apply the schema migrations that are missing (safe to run again)."""
    try:
        applied = migrate(database_url)
        with psycopg.connect(database_url) as conn:
            edition = detect_edition(conn)
    except psycopg.Error as exc:
        raise click.ClickException(f"database error: {exc}") from exc
    click.echo(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none'}")
    click.echo(f"storage edition: {edition.value}, using {edition.uses}")
