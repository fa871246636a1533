"""The app factory: ``create_app(settings=None)``.

One app per process (gunicorn builds one per worker, after the fork): it holds the
connection pool, the metrics, the cloud's keys, the MQTT publisher and the
LISTEN thread; blueprints hold the routes.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from flask import Flask, Response, current_app, g, request
from psycopg_pool import ConnectionPool
from werkzeug.exceptions import HTTPException

from smartlocker.cloud.db import Edition, detect_edition
from smartlocker.cloud.downlink import Publisher
from smartlocker.cloud.errors import CloudError
from smartlocker.cloud.keys import CloudKeys, load_keys
from smartlocker.protocol import TopicScheme, utcnow

from .broker import BrokerRegistrar
from .config import ApiSettings
from .db import close_conn, make_pool
from .errors import PROBLEM_CONTENT_TYPE, ApiError, Problem, ServiceUnavailable, problem_type
from .keycache import KeyCache
from .metrics import Metrics
from .openapi import build_openapi
from .ratelimit import CodeThrottle
from .routing import OPERATIONS
from .waiter import CommandWaiter

__all__ = ["ApiState", "create_app", "state"]

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
    waiter: CommandWaiter
    keys: CloudKeys | None = None
    publisher: Publisher | None = None
    registrar: BrokerRegistrar | None = None
    clock: Callable[[], datetime] = utcnow
    topics: TopicScheme = field(default_factory=TopicScheme)
    throttle: CodeThrottle = field(default_factory=CodeThrottle)
    key_cache: KeyCache = field(default_factory=KeyCache)
    owns_publisher: bool = False
    #: Called by :meth:`close` (the dashboard's live feed registers its own).
    closers: list[Callable[[], None]] = field(default_factory=list)
    #: Random per process: the ``X-Worker`` header tells workers apart (no pid leaks).
    worker_id: str = field(default_factory=lambda: secrets.token_hex(4))
    _openapi: bytes | None = field(default=None, repr=False)
    _edition: Edition | None = field(default=None, repr=False)

    def edition(self, conn: psycopg.Connection[Any]) -> Edition:
        """The storage edition (detected once per process)."""
        if self._edition is None:
            self._edition = detect_edition(conn)
            logger.info("storage edition: %s", self._edition.value)
        return self._edition

    def require_keys(self) -> CloudKeys:
        if self.keys is None:
            raise ServiceUnavailable("no signing key configured (SMARTLOCKER_SIGNING_KEY)")
        return self.keys

    def require_publisher(self) -> Publisher:
        if self.publisher is None:
            raise ServiceUnavailable("no MQTT connection configured (SMARTLOCKER_MQTT_URL)")
        return self.publisher

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
        for close in self.closers:
            close()
        self.waiter.close()
        if self.owns_publisher:
            closer = getattr(self.publisher, "close", None)
            if callable(closer):
                closer()
        self.pool.close()


def state() -> ApiState:
    """The current app's state (inside a request)."""
    s: ApiState = current_app.extensions["smartlocker"]
    return s


def create_app(
    settings: ApiSettings | None = None,
    *,
    publisher: Publisher | None = None,
    keys: CloudKeys | None = None,
    registrar: BrokerRegistrar | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Flask:
    """A configured app; ``settings`` default to the environment (CONTRACT.md names).

    ``publisher``, ``keys`` and ``registrar`` default to what the settings name (the
    MQTT URL, the signing key file, a Mosquitto password file); tests pass their own.
    """
    from smartlocker.cloud import dashboard

    from . import blueprints

    settings = settings or ApiSettings.from_env()
    app = Flask("smartlocker.cloud.api")
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    if keys is None and settings.signing_key is not None:
        keys = load_keys(settings.signing_key)
    owns_publisher = False
    if publisher is None and settings.mqtt_url:
        from .publisher import connect_publisher

        publisher = connect_publisher(settings.mqtt_url)
        owns_publisher = True
    if registrar is None and settings.mosquitto_password_file is not None:
        from .broker import PasswordFileRegistrar

        registrar = PasswordFileRegistrar(
            settings.mosquitto_password_file, pid_file=settings.mosquitto_pid_file
        )
    api_state = app.extensions["smartlocker"] = ApiState(
        settings=settings,
        pool=make_pool(
            settings.database_url, min_size=settings.pool_min, max_size=settings.pool_max
        ),
        metrics=Metrics(),
        waiter=CommandWaiter(settings.database_url),
        keys=keys,
        publisher=publisher,
        registrar=registrar,
        clock=clock or utcnow,
        topics=TopicScheme(settings.topic_prefix),
        throttle=CodeThrottle(free_attempts=settings.code_free_attempts),
        key_cache=KeyCache(settings.key_cache_seconds),
        owns_publisher=owns_publisher,
    )
    for bp in blueprints.ALL:
        app.register_blueprint(bp)
    live = dashboard.install(app, settings.database_url, max_streams=settings.dashboard_streams)
    api_state.closers.append(live.close)
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
    """Business-rule errors (``smartlocker.cloud.errors.CloudError``) keep their slug."""
    if not isinstance(exc, CloudError):
        return None
    if exc.status >= 500:
        logger.error("cloud error %s: %s", exc.type, exc)
    return Problem(
        type=problem_type(exc.type),
        title=exc.type.replace("-", " ").capitalize(),
        status=exc.status,
        detail=str(exc),
    )


def _start_timer() -> None:
    g.started = time.perf_counter()


def _count(response: Response) -> Response:
    s = state()
    response.headers["X-Worker"] = s.worker_id
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    s.metrics.requests.labels(request.method, endpoint, str(response.status_code)).inc()
    started = g.get("started")
    if started is not None:
        s.metrics.latency.labels(request.method, endpoint).observe(time.perf_counter() - started)
    return response
