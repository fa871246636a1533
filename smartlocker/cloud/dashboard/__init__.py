"""The operator dashboard: pages served by the API process, built on the REST API.

:func:`install` registers the blueprint and the live feed (one LISTEN thread per
process fanning notes out to server-sent-event streams, scoped by site).
"""

from __future__ import annotations

from flask import Flask

from .feed import LiveFeed, feed, feed_of
from .hub import Hub, HubFull, Note, Subscription, parse_note
from .listener import CHANNEL, Listener

__all__ = [
    "CHANNEL",
    "Hub",
    "HubFull",
    "Listener",
    "LiveFeed",
    "Note",
    "Subscription",
    "feed",
    "feed_of",
    "install",
    "parse_note",
]


def install(app: Flask, database_url: str, *, max_streams: int) -> LiveFeed:
    """Serve the dashboard from ``app``; returns its live feed (close it with the app)."""
    from .views import bp, root_bp

    app.register_blueprint(bp)
    app.register_blueprint(root_bp)
    return LiveFeed.install(app, database_url, max_streams=max_streams)
