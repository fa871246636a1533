"""The dashboard's blueprint: its pages, static files and the live stream.

Pages are templates without data: each page's script fetches ``/api/v1/...`` with
the key the operator signed in with (kept in the tab's ``sessionStorage``, sent as
``Authorization: Bearer``, never in a URL or cookie). So the API's roles and site
scopes are the only rules, and the pages cannot show what the key may not read.
Every response of the blueprint carries a Content-Security-Policy without inline
scripts or styles.
"""

from __future__ import annotations

import logging
import re

from flask import Blueprint, Response, redirect, render_template, request

from smartlocker.cloud.api.auth import authenticate
from smartlocker.cloud.api.db import close_conn
from smartlocker.cloud.api.errors import NotFound, ServiceUnavailable
from smartlocker.cloud.api.models import PARCEL_ID_PATTERN
from smartlocker.protocol.ids import CABINET_ID_PATTERN

from .feed import feed
from .hub import HubFull
from .stream import run_stream

__all__ = ["CSP", "bp", "root_bp"]

logger = logging.getLogger(__name__)

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
#: ``/`` leads to the dashboard.
root_bp = Blueprint("dashboard_root", __name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_CABINET = re.compile(CABINET_ID_PATTERN)
_PARCEL = re.compile(PARCEL_ID_PATTERN)


@bp.after_request
def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return response


@root_bp.get("/")
def root() -> Response:
    return redirect("/dashboard/", code=302)  # type: ignore[return-value]


def _page(template: str, title: str, **context: str) -> str:
    return render_template(template, title=title, **context)


@bp.get("/")
def overview() -> str:
    return _page("overview.html", "Fleet")


@bp.get("/signin")
def signin() -> str:
    return _page("signin.html", "Sign in")


@bp.get("/cabinets/<cabinet>")
def cabinet(cabinet: str) -> str:
    if not _CABINET.fullmatch(cabinet):
        raise NotFound(f"no cabinet {cabinet!r}")
    return _page("cabinet.html", f"Cabinet {cabinet}", cabinet=cabinet)


@bp.get("/parcels")
def parcels() -> str:
    return _page("parcels.html", "Parcels")


@bp.get("/parcels/<parcel>")
def parcel(parcel: str) -> str:
    if not _PARCEL.fullmatch(parcel):
        raise NotFound(f"no parcel {parcel!r}")
    return _page("parcel.html", f"Parcel {parcel}", parcel=parcel)


@bp.get("/alerts")
def alerts() -> str:
    return _page("alerts.html", "Alerts")


@bp.get("/audit")
def audit() -> str:
    return _page("audit.html", "Audit log")


@bp.get("/stats")
def stats() -> str:
    return _page("stats.html", "Occupancy and dwell time")


@bp.get("/stream")
def stream() -> Response:
    """Server-sent events of the key's sites (``Authorization: Bearer``, as the API)."""
    principal = authenticate(request.headers.get("Authorization"))
    close_conn()  # the stream holds no database connection
    live = feed()
    live.listener.ensure_started()
    try:
        sub = live.hub.subscribe(principal.sites)
    except HubFull as exc:
        logger.warning("live stream refused: %s", exc)
        raise ServiceUnavailable(str(exc), slug="too-many-streams") from None
    hello = {
        "role": principal.role.value,
        "sites": None if principal.sites is None else sorted(principal.sites),
    }
    # The generator needs no request context (nor a database connection): the
    # request is over, as far as Flask is concerned, once it starts.
    body = run_stream(live.hub, sub, hello, heartbeat=live.heartbeat, lifetime=live.lifetime)
    return Response(
        body,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
