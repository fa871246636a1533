"""``smartlocker apikey``: API keys for the operator REST API."""

from __future__ import annotations

import click
import psycopg

from smartlocker.cloud.api.auth import Role, create_key

__all__ = ["apikey"]


@click.group()
def apikey() -> None:
    """API keys (role and site scope)."""


@apikey.command("create")
@click.option(
    "--database-url",
    envvar="SMARTLOCKER_DATABASE_URL",
    required=True,
    help="postgresql://… (env SMARTLOCKER_DATABASE_URL)",
)
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    required=True,
    help="admin, operator, courier or viewer.",
)
@click.option(
    "--site",
    "sites",
    multiple=True,
    help="A site the key may touch (repeat); none given: every site.",
)
@click.option("--name", required=True, help="Who or what uses the key (shown in the audit).")
def create(database_url: str, role: str, sites: tuple[str, ...], name: str) -> None:
    """Create a key and print it once (only its hash is stored)."""
    try:
        with psycopg.connect(database_url) as conn:
            key = create_key(conn, name=name, role=Role(role), sites=list(sites) or None)
    except psycopg.Error as exc:
        raise click.ClickException(f"database error: {exc}") from exc
    scope = ", ".join(sorted(key.sites)) if key.sites is not None else "all sites"
    click.echo(f"created key {key.key_id} ({key.role.value}, {scope}); it is shown once:", err=True)
    click.echo(key.token)
