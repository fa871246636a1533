"""``smartlocker cloud``: the cloud's long-running services."""

from __future__ import annotations

import click

from .cloud_api_cmd import api

__all__ = ["cloud"]


@click.group()
def cloud() -> None:
    """Cloud services: ingest, api, workers."""


cloud.add_command(api)
