"""``/api/v1/cabinets``: provisioning, detail, compartment switches, remote unlock."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from flask import Blueprint
from psycopg import sql

from smartlocker.cloud.downlink import publish_desired
from smartlocker.cloud.rules.fleet import CompartmentSpec as SpecRule
from smartlocker.cloud.rules.fleet import audit, create_cabinet, set_compartment
from smartlocker.cloud.rules.site_settings import set_device_credentials
from smartlocker.protocol.ids import CABINET_ID_PATTERN, COMPARTMENT_ID_PATTERN
from smartlocker.protocol.signing import public_key_pem

from .app import state
from .auth import current_principal
from .broker import mosquitto_password_hash, new_device_password
from .db import get_conn
from .errors import ServiceUnavailable
from .models import (
    CabinetCreate,
    CabinetDetail,
    CabinetList,
    CabinetProvisioned,
    CabinetQuery,
    CabinetSummary,
    Command,
    Compartment,
    CompartmentUpdate,
    CredentialSet,
    UnlockRequest,
    WaitQuery,
)
from .pagination import decode_cursor, encode_cursor
from .publisher import MqttPublishError
from .roles import ADMIN, ANYONE, OPERATE
from .routing import operation
from .scope import cabinet_site, visible_site
from .unlock import open_compartment

__all__ = ["bp", "republish"]

logger = logging.getLogger(__name__)

bp = Blueprint("cabinets", __name__)
_CAB = {"cabinet": CABINET_ID_PATTERN}
_COMP = {"cabinet": CABINET_ID_PATTERN, "compartment": COMPARTMENT_ID_PATTERN}
_SUMMARY = "id, site, name, online, last_seen, created_at"
_COMPARTMENT = (
    "c.id, c.size, c.enabled, c.out_of_service, c.door, c.lock, c.occupancy,"
    " c.temperature_controlled, c.temperature_c, c.temperature_at, p.id, p.deposited_at"
)
# A compartment with the parcel that holds it (at most one active: a unique index says so).
_COMPARTMENTS = (
    f"SELECT {_COMPARTMENT} FROM compartments c LEFT JOIN parcels p"  # noqa: S608
    " ON p.cabinet = c.cabinet AND p.compartment = c.id"
    " AND p.state IN ('reserved', 'deposited', 'expired')"
    " WHERE c.cabinet = %s"
)


def republish(conn: psycopg.Connection[Any], cabinet: str) -> None:
    """After a commit that changed what the cabinet should hold: sign and publish it.

    A broker that is down loses nothing: the version is committed, and ingest
    republishes it when the cabinet next says it is online.
    """
    s = state()
    if s.publisher is None or s.keys is None:
        return
    try:
        publish_desired(conn, s.publisher, s.keys.signing_key, cabinet, topics=s.topics)
    except MqttPublishError as exc:
        logger.warning(
            "desired state of %s not published now (%s); sent on reconnect", cabinet, exc
        )


def _compartment(row: Any) -> Compartment:
    return Compartment(
        id=row[0],
        size=row[1],
        enabled=row[2],
        out_of_service=row[3],
        door=row[4],
        lock=row[5],
        occupancy=row[6],
        temperature_controlled=row[7],
        temperature_c=row[8],
        temperature_at=row[9],
        parcel=row[10],
        occupied_since=row[11],
    )


def load_cabinet(conn: psycopg.Connection[Any], cabinet: str) -> CabinetDetail:
    """The detail of a cabinet the caller has already been scoped to."""
    row = conn.execute(
        f"SELECT {_SUMMARY}, agent_version, desired_version, reported_version"  # noqa: S608
        " FROM cabinets WHERE id = %s",
        (cabinet,),
    ).fetchone()
    assert row is not None
    compartments = conn.execute(_COMPARTMENTS + " ORDER BY c.id", (cabinet,)).fetchall()
    return CabinetDetail(
        id=row[0],
        site=row[1],
        name=row[2],
        online=row[3],
        last_seen=row[4],
        created_at=row[5],
        agent_version=row[6],
        desired_version=row[7],
        reported_version=row[8],
        compartments=[_compartment(c) for c in compartments],
    )


@operation(
    bp,
    "GET",
    "/cabinets",
    summary="List cabinets",
    roles=ANYONE,
    query=CabinetQuery,
    response=CabinetList,
)
def list_cabinets(query: CabinetQuery) -> CabinetList:
    """Cabinets of the key's sites (optionally of one site), by id."""
    principal = current_principal()
    scope, params = principal.site_filter("site")
    after = decode_cursor(query.cursor, [str])[0] if query.cursor else None
    rows = (
        get_conn()
        .execute(
            sql.SQL(
                "SELECT {} FROM cabinets WHERE {} AND (%s::text IS NULL OR site = %s)"
                " AND (%s::text IS NULL OR id > %s) ORDER BY id LIMIT %s"
            ).format(sql.SQL(_SUMMARY), scope),
            [*params, query.site, query.site, after, after, query.limit + 1],
        )
        .fetchall()
    )
    items = [
        CabinetSummary(id=r[0], site=r[1], name=r[2], online=r[3], last_seen=r[4], created_at=r[5])
        for r in rows[: query.limit]
    ]
    more = len(rows) > query.limit
    return CabinetList(items=items, next_cursor=encode_cursor([items[-1].id]) if more else None)


@operation(
    bp,
    "POST",
    "/cabinets",
    summary="Provision a cabinet",
    roles=ADMIN,
    body=CabinetCreate,
    response=CabinetProvisioned,
    status=201,
    errors=(404, 409, 422, 503),
)
def provision_cabinet(body: CabinetCreate) -> CabinetProvisioned:
    """Create the cabinet and its compartments, and its MQTT credentials (shown once).

    The password is registered with the broker (when the API is configured with
    one) in the same transaction: if the broker refuses, nothing is created.
    """
    principal = current_principal()
    s = state()
    keys = s.require_keys()
    conn = get_conn()
    visible_site(conn, principal, body.site)
    password = new_device_password()
    now = s.clock()
    with conn.transaction():
        create_cabinet(
            conn,
            body.id,
            body.site,
            [
                SpecRule(
                    id=c.id,
                    size=c.size,
                    temperature_controlled=c.temperature_controlled,
                    temp_min_c=c.temp_min_c,
                    temp_max_c=c.temp_max_c,
                )
                for c in body.compartments
            ],
            name=body.name,
        )
        set_device_credentials(
            conn, body.id, mosquitto_password_hash(password), actor=principal.actor, now=now
        )
        audit(
            conn,
            actor=principal.actor,
            action="cabinet.create",
            target_kind="cabinet",
            target=body.id,
            now=now,
            detail={"site": body.site, "compartments": len(body.compartments)},
        )
        if s.registrar is not None:
            try:
                s.registrar.register(body.id, password)
            except (OSError, RuntimeError, ValueError) as exc:
                logger.error("broker registration of %s failed: %s", body.id, exc)
                raise ServiceUnavailable(
                    f"the broker did not accept the credentials of {body.id}",
                    slug="broker-unavailable",
                ) from exc
    republish(conn, body.id)
    return CabinetProvisioned(
        cabinet=load_cabinet(conn, body.id),
        credentials=CredentialSet(
            mqtt_username=body.id,
            mqtt_password=password,
            mqtt_client_id=body.id,
            mqtt_url=s.settings.device_mqtt_url,
            cloud_public_key_pem=public_key_pem(keys.signing_key).decode(),
            code_key_hex=keys.code_key(body.id).hex(),
            broker_registered=s.registrar is not None,
        ),
    )


@operation(
    bp,
    "GET",
    "/cabinets/{cabinet}",
    summary="Get a cabinet",
    roles=ANYONE,
    path_params=_CAB,
    response=CabinetDetail,
)
def get_cabinet(cabinet: str) -> CabinetDetail:
    """Online, last seen, and each compartment's door, lock and occupancy."""
    conn = get_conn()
    cabinet_site(conn, current_principal(), cabinet)
    return load_cabinet(conn, cabinet)


@operation(
    bp,
    "PATCH",
    "/cabinets/{cabinet}/compartments/{compartment}",
    summary="Enable, disable or take out of service",
    roles=OPERATE,
    path_params=_COMP,
    body=CompartmentUpdate,
    response=Compartment,
)
def patch_compartment(cabinet: str, compartment: str, body: CompartmentUpdate) -> Compartment:
    """The cabinet's signed desired state follows when the change matters to it."""
    principal = current_principal()
    conn = get_conn()
    cabinet_site(conn, principal, cabinet)
    changed = set_compartment(
        conn,
        cabinet,
        compartment,
        actor=principal.actor,
        now=state().clock(),
        enabled=body.enabled,
        out_of_service=body.out_of_service,
    )
    if changed:
        republish(conn, cabinet)
    row = conn.execute(_COMPARTMENTS + " AND c.id = %s", (cabinet, compartment)).fetchone()
    return _compartment(row)


@operation(
    bp,
    "POST",
    "/cabinets/{cabinet}/compartments/{compartment}/unlock",
    summary="Remote unlock",
    roles=OPERATE,
    path_params=_COMP,
    query=WaitQuery,
    body=UnlockRequest,
    response=Command,
    status=202,
    errors=(429, 503),
    extra_responses={200: ("The command is final (only with `wait`)", Command)},
)
def unlock(cabinet: str, compartment: str, body: UnlockRequest, query: WaitQuery) -> Any:
    """Open one compartment, with a reason (audited). 202 with the command; with
    ``?wait=SECONDS``, 200 once it is final, or 202 if it is still pending then."""
    # The key's sites are checked by the statement that creates the command (no
    # lookup of its own): out of scope is "no cabinet", as everywhere.
    return open_compartment(
        get_conn(),
        current_principal(),
        cabinet,
        compartment,
        purpose="operator",
        reason=body.reason,
        wait=query.wait,
    )
