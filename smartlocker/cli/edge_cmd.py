"""``smartlocker edge``: the agent on a cabinet."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["edge"]


@click.group()
def edge() -> None:
    """The cabinet's edge agent."""


@edge.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    envvar="SMARTLOCKER_EDGE_CONFIG",
    help="The cabinet's TOML file (see examples/cabinet.toml).",
)
def run(config_path: Path) -> None:
    """Run the agent until SIGTERM or SIGINT (locks de-energised on the way out)."""
    from smartlocker.edge_agent import Agent, EdgeError, load_config, run_until_signal

    try:
        run_until_signal(Agent(load_config(config_path)))
    except EdgeError as exc:
        raise click.ClickException(str(exc)) from None
