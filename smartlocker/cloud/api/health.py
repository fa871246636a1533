"""``/healthz`` (alive), ``/readyz`` (database, migrations, MQTT), ``/metrics``, the spec."""

from __future__ import annotations

import logging
from typing import Literal

import psycopg
from flask import Blueprint, Response, current_app
from pydantic import BaseModel, ConfigDict

from smartlocker.cloud.db import available_migrations

from .db import get_conn
from .metrics import CONTENT_TYPE
from .routing import json_response, operation

__all__ = ["bp"]

logger = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["ok"] = "ok"


class ReadyChecks(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: str
    migrations: str
    mqtt: str


class Readiness(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["ready", "not_ready"]
    checks: ReadyChecks


@operation(
    bp, "GET", "/healthz", summary="Process is alive", roles=None, response=Health, prefix=""
)
def healthz() -> Health:
    """Answers as long as the process serves HTTP; touches nothing else."""
    return Health()


@operation(
    bp,
    "GET",
    "/readyz",
    summary="Ready to serve",
    roles=None,
    response=Readiness,
    prefix="",
    extra_responses={503: ("Not ready (see `checks`)", Readiness)},
)
def readyz() -> Response:
    """The database answers, every migration is applied, the MQTT publisher is connected."""
    state = current_app.extensions["smartlocker"]
    database = migrations = "ok"
    try:
        conn = get_conn()
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        missing = [m.version for m in available_migrations() if m.version not in done]
        if missing:
            migrations = "missing: " + ", ".join(missing)
    except psycopg.Error as exc:
        logger.warning("readyz: database check failed: %s", exc)
        database = "unreachable"
        migrations = "unknown"
    mqtt = state.mqtt_status()
    ok = database == "ok" and migrations == "ok" and mqtt in ("ok", "not configured")
    body = Readiness(
        status="ready" if ok else "not_ready",
        checks=ReadyChecks(database=database, migrations=migrations, mqtt=mqtt),
    )
    return json_response(body, 200 if ok else 503)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format (all workers in multiprocess mode)."""
    state = current_app.extensions["smartlocker"]
    return Response(state.metrics.render(), mimetype=None, content_type=CONTENT_TYPE)


@bp.get("/api/v1/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI 3.1 document of this API."""
    state = current_app.extensions["smartlocker"]
    return Response(state.openapi_bytes(), mimetype="application/json")
