"""The one program, ``smartlocker``, with its subcommands loaded on demand.

Subcommands are imported only when invoked, so ``smartlocker edge run`` on a
cabinet never imports Flask or psycopg.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import click

from smartlocker import __version__

__all__ = ["main"]

#: name → "module:attribute" of each subcommand (a click command or group).
SUBCOMMANDS: dict[str, str] = {
    "apikey": "smartlocker.cli.apikey_cmd:apikey",
    "bench": "smartlocker.cli.bench_cmd:bench",
    "cloud": "smartlocker.cli.cloud_cmd:cloud",
    "db": "smartlocker.cli.db_cmd:db",
    "demo": "smartlocker.cli.demo_cmd:demo",
    "edge": "smartlocker.cli.edge_cmd:edge",
    "protocol": "smartlocker.cli.protocol_cmd:protocol",
    "simulate": "smartlocker.cli.simulate_cmd:simulate",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported when first used."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            module_name, attr = self._lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self._lazy[cmd_name]} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=SUBCOMMANDS)
@click.version_option(__version__, prog_name="smartlocker")
@click.option(
    "--log-level",
    envvar="SMARTLOCKER_LOG_LEVEL",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Logging threshold for every component.",
)
def main(log_level: str) -> None:
    """smartlocker: smart parcel lockers, from the cabinet to the cloud."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
