"""``GET /api/v1/me``: who the key is, so a client (the dashboard) can shape its UI.

What the key may do is derived from the same role sets the routes declare
(:mod:`.roles`); the routes still check every call themselves.
"""

from __future__ import annotations

from typing import Literal

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from .auth import Role, current_principal
from .roles import ADMIN, ANYONE, OPERATE, PARCELS
from .routing import operation

__all__ = ["ACTIONS", "Me", "bp"]

bp = Blueprint("me", __name__)

Action = Literal["read", "parcels", "operate", "admin"]
#: Each action a UI may offer, and the roles allowed to do it.
ACTIONS: dict[Action, frozenset[Role]] = {
    "read": ANYONE,
    "parcels": PARCELS,
    "operate": OPERATE,
    "admin": ADMIN,
}


class Me(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key_id: str
    name: str
    role: Literal["admin", "operator", "courier", "viewer"]
    sites: list[str] | None = Field(description="The sites the key reaches (null: every site).")
    may: list[Action] = Field(
        description="read: everything in its sites; parcels: reserve, deposit, cancel,"
        " return; operate: remote unlock, compartment switches, deadlines, codes, alert"
        " acknowledgement; admin: sites and provisioning."
    )


@operation(bp, "GET", "/me", summary="Who this key is", roles=ANYONE, response=Me)
def me() -> Me:
    """The key's name, role, sites and what its role allows."""
    principal = current_principal()
    return Me(
        key_id=principal.key_id,
        name=principal.name,
        role=principal.role.value,
        sites=None if principal.sites is None else sorted(principal.sites),
        may=[action for action, roles in ACTIONS.items() if principal.role in roles],
    )
