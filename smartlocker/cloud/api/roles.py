"""Who may do what: the role sets the routes declare."""

from __future__ import annotations

from .auth import Role

__all__ = ["ADMIN", "ANYONE", "OPERATE", "PARCELS"]

#: Read anything in the key's sites.
ANYONE = frozenset(Role)
#: Reserve, deposit, pick up, cancel, return parcels.
PARCELS = frozenset({Role.ADMIN, Role.OPERATOR, Role.COURIER})
#: Remote unlocks, compartment switches, deadlines, codes, alerts.
OPERATE = frozenset({Role.ADMIN, Role.OPERATOR})
#: Sites and cabinet provisioning.
ADMIN = frozenset({Role.ADMIN})
