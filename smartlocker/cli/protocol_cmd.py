"""``smartlocker protocol``: the wire contract, printed for other programs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from smartlocker.protocol import (
    generate_private_key,
    message_schemas,
    private_key_pem,
    public_key_pem,
)

__all__ = ["protocol"]


@click.group()
def protocol() -> None:
    """Message schemas and signing keys."""


@protocol.command()
@click.option("--out", type=click.Path(path_type=Path), help="Write here instead of stdout.")
def schema(out: Path | None) -> None:
    """JSON Schemas of every message, keyed by channel."""
    text = json.dumps(message_schemas(), indent=2, sort_keys=True) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")


@protocol.command()
@click.argument("private_key", type=click.Path(path_type=Path))
@click.option("--public", "public_key", type=click.Path(path_type=Path), required=True)
def keygen(private_key: Path, public_key: Path) -> None:
    """Create the cloud's Ed25519 signing key (PEM) and its public half for cabinets."""
    if private_key.exists():
        raise click.ClickException(f"{private_key} exists; refusing to overwrite a signing key")
    key = generate_private_key()
    private_key.touch(mode=0o600)
    private_key.write_bytes(private_key_pem(key))
    public_key.write_bytes(public_key_pem(key))
    click.echo(f"wrote {private_key} (keep secret) and {public_key} (give to cabinets)")
