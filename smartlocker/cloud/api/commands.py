"""``/api/v1/commands/{command}``: a command's status and result."""

from __future__ import annotations

from flask import Blueprint

from smartlocker.cloud.rules.commands import get_command
from smartlocker.protocol.ids import MESSAGE_ID_PATTERN

from .auth import current_principal
from .db import get_conn
from .models import Command
from .roles import ANYONE
from .routing import operation
from .scope import command_site
from .unlock import command_model

__all__ = ["bp"]

bp = Blueprint("commands", __name__)


@operation(
    bp,
    "GET",
    "/commands/{command}",
    summary="Get a command",
    roles=ANYONE,
    path_params={"command": MESSAGE_ID_PATTERN},
    response=Command,
)
def get_command_view(command: str) -> Command:
    conn = get_conn()
    command_site(conn, current_principal(), command)
    return command_model(get_command(conn, command))
