"""Every blueprint of the API, in the order they are registered."""

from __future__ import annotations

from flask import Blueprint

from . import health

__all__ = ["ALL"]

ALL: list[Blueprint] = [health.bp]
