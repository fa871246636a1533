"""The app factory: ``create_app(settings=None)``.

One app per process (gunicorn builds one per worker, after the fork): it holds the
connection pool, the metrics and the MQTT publisher; blueprints hold the routes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, g, request
from psycopg_pool import ConnectionPool
from werkzeug.exceptions import HTTPException

from .config import ApiSettings
from .db import close_conn, make_pool
from .errors import PROBLEM_CONTENT_TYPE, ApiError, Problem, problem_type
from .metrics import Metrics
from .openapi import build_openapi
from .routing import OPERATIONS

__all__ = ["ApiState", "create_app"]

logger = logging.getLogger(__name__)

_HTTP_SLUGS = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "too-large",
    415: "unsupported-media-type",
}


@dataclass
class ApiState:
    """What the app holds for its requests (``app.extensions["smartlocker"]``)."""

    settings: ApiSettings
    pool: ConnectionPool[Any]
    metrics: Metrics
    publisher: Any = None
    _openapi: bytes | None = field(default=None, repr=False)

    def openapi_bytes(self) -> bytes:
        if self._openapi is None:
            self._openapi = json.dumps(build_openapi(OPERATIONS)).encode()
        return self._openapi

    def mqtt_status(self) -> str:
        if self.publisher is None:
            return "not configured"
        connected = getattr(self.publisher, "is_connected", None)
        if callable(connected):
            return "ok" if connected() else "disconnected"
        return "ok"

    def close(self) -> None:
        closer = getattr(self.publisher, "close", None)
        if callable(closer):
            closer()
        self.pool.close()


def create_app(settings: ApiSettings | None = None, *, publisher: Any = None) -> Flask:
    """A configured app; ``settings`` default to the environment (CONTRACT.md names)."""
    from . import blueprints

    settings = settings or ApiSettings.from_env()
    app = Flask("smartlocker.cloud.api")
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    state = ApiState(
        settings=settings,
        pool=make_pool(
            settings.database_url, min_size=settings.pool_min, max_size=settings.pool_max
        ),
        metrics=Metrics(),
        publisher=publisher,
    )
    app.extensions["smartlocker"] = state
    for bp in blueprints.ALL:
        app.register_blueprint(bp)
    app.register_error_handler(Exception, _handle_error)
    app.before_request(_start_timer)
    app.after_request(_count)
    app.teardown_request(close_conn)
    return app


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    body = problem.__pydantic_serializer__.to_json(problem, exclude_none=True)
    return Response(body, status=problem.status, content_type=PROBLEM_CONTENT_TYPE, headers=headers)


def _handle_error(exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        if exc.status >= 500:
            logger.error("%s: %s", exc.slug, exc.detail)
        return problem_response(exc.problem(), exc.headers())
    cloud = _cloud_problem(exc)
    if cloud is not None:
        return problem_response(cloud)
    if isinstance(exc, HTTPException):
        code = exc.code or 500
        headers = {k: v for k, v in exc.get_headers() if k.lower() in ("allow", "retry-after")}
        problem = Problem(
            type=problem_type(_HTTP_SLUGS.get(code, f"http-{code}")),
            title=exc.name,
            status=code,
            detail=exc.description,
        )
        return problem_response(problem, headers)
    logger.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return problem_response(
        Problem(type=problem_type("internal"), title="Internal error", status=500)
    )


def _cloud_problem(exc: Exception) -> Problem | None:
    """Business-rule errors (``smartlocker.cloud.errors``), once they exist."""
    return None


def _start_timer() -> None:
    g.started = time.perf_counter()


def _count(response: Response) -> Response:
    from flask import current_app

    state: ApiState = current_app.extensions["smartlocker"]
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    state.metrics.requests.labels(request.method, endpoint, str(response.status_code)).inc()
    started = g.get("started")
    if started is not None:
        state.metrics.latency.labels(request.method, endpoint).observe(
            time.perf_counter() - started
        )
    return response
