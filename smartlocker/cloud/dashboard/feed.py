"""The dashboard's live feed of one app: its :class:`~.hub.Hub` and :class:`~.listener.Listener`."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from .hub import Hub
from .listener import Listener

__all__ = ["LiveFeed", "feed", "feed_of"]

_EXTENSION = "smartlocker.dashboard"


@dataclass
class LiveFeed:
    """What the stream view needs; built once per app (per gunicorn worker)."""

    hub: Hub
    listener: Listener
    heartbeat: float = 15.0
    #: A stream authenticates once; ending it every two minutes makes the page
    #: reconnect with its key, so a revoked key's stream stops within that time.
    lifetime: float = 120.0

    @classmethod
    def install(cls, app: Flask, database_url: str, *, max_streams: int = 64) -> LiveFeed:
        hub = Hub(max_subscribers=max_streams)
        live = cls(hub=hub, listener=Listener(database_url, hub))
        app.extensions[_EXTENSION] = live
        return live

    def close(self) -> None:
        self.listener.close()


def feed_of(app: Flask) -> LiveFeed:
    """``app``'s feed."""
    live: LiveFeed = app.extensions[_EXTENSION]
    return live


def feed() -> LiveFeed:
    """The current app's feed (inside a request)."""
    return feed_of(current_app)
