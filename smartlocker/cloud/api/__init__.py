"""The operator REST API (Flask): ``create_app(settings=None)``.

Routes call the business rules of :mod:`smartlocker.cloud`; they never re-implement
them. See ``docs/api.md``.
"""

from .app import create_app
from .config import ApiSettings

__all__ = ["ApiSettings", "create_app"]
