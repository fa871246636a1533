"""Every blueprint of the API, in the order they are registered."""

from __future__ import annotations

from flask import Blueprint

from . import alerts, cabinets, commands, health, insight, me, notifications, parcels, sites

__all__ = ["ALL"]

ALL: list[Blueprint] = [
    health.bp,
    sites.bp,
    cabinets.bp,
    commands.bp,
    parcels.bp,
    alerts.bp,
    notifications.bp,
    insight.bp,
    me.bp,
]
