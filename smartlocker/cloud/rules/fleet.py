"""Sites, cabinets and compartments: provisioning and the operator's switches.

Changing a compartment's ``enabled`` / ``out_of_service`` flags changes the
cabinet's desired state: the functions say so, and the caller republishes
(:func:`smartlocker.cloud.downlink.publish_desired`) after committing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from smartlocker.protocol import validate_cabinet_id, validate_compartment_id

from ..errors import Conflict, NotFound, ValidationFailed
from .allocation import SIZES
from .fees import FeePolicy

__all__ = [
    "AUDIT_INSERT",
    "CompartmentSpec",
    "audit",
    "audit_insert_from",
    "audit_params",
    "create_cabinet",
    "create_site",
    "set_compartment",
    "set_fee_policy",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CompartmentSpec:
    id: str
    size: str
    temperature_controlled: bool = False
    temp_min_c: float | None = None
    temp_max_c: float | None = None


#: One row of the operator audit, from the named parameters :func:`audit_params` gives:
#: a statement of its own, or a part of a larger one (the API's unlock).
_AUDIT_INTO = "INSERT INTO audit_log (at, actor, action, target_kind, target, detail)"
_AUDIT_ROW = (
    "%(audit_at)s, %(audit_actor)s, %(audit_action)s, %(audit_target_kind)s,"
    " %(audit_target)s, %(audit_detail)s"
)
AUDIT_INSERT = f"{_AUDIT_INTO} VALUES ({_AUDIT_ROW})"


def audit_insert_from(source: str) -> str:
    """:data:`AUDIT_INSERT`'s row once for each row of ``source`` (a CTE of the
    enclosing statement): audited only if what it audits happened (the API's unlock)."""
    return f"{_AUDIT_INTO} SELECT {_AUDIT_ROW} FROM {source}"  # noqa: S608 (constants)


def audit_params(
    *,
    actor: str,
    action: str,
    target_kind: str,
    target: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The parameters of :data:`AUDIT_INSERT`."""
    return {
        "audit_at": now,
        "audit_actor": actor,
        "audit_action": action,
        "audit_target_kind": target_kind,
        "audit_target": target,
        "audit_detail": Jsonb(detail) if detail else None,
    }


def audit(
    conn: psycopg.Connection[Any],
    *,
    actor: str,
    action: str,
    target_kind: str,
    target: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    """One row of the operator audit."""
    conn.execute(
        AUDIT_INSERT,
        audit_params(
            actor=actor,
            action=action,
            target_kind=target_kind,
            target=target,
            now=now,
            detail=detail,
        ),
    )


def create_site(
    conn: psycopg.Connection[Any],
    site: str,
    name: str,
    *,
    hold_hours: int = 72,
    reservation_hours: int = 48,
    timezone: str = "UTC",
) -> None:
    try:
        validate_cabinet_id(site)
    except ValueError as exc:
        raise ValidationFailed(f"bad site id {site!r}") from exc
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO sites (id, name, hold_hours, reservation_hours, timezone)"
                " VALUES (%s, %s, %s, %s, %s)",
                (site, name, hold_hours, reservation_hours, timezone),
            )
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(f"site {site} exists", site=site) from exc
    except psycopg.errors.CheckViolation as exc:
        raise ValidationFailed(f"bad site settings: {exc.diag.message_primary}") from exc


def set_fee_policy(conn: psycopg.Connection[Any], site: str, policy: FeePolicy) -> None:
    conn.execute(
        "INSERT INTO fee_policies (site, free_hours, unit, fee_per_unit, cap, currency)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (site) DO UPDATE SET"
        " free_hours = EXCLUDED.free_hours, unit = EXCLUDED.unit,"
        " fee_per_unit = EXCLUDED.fee_per_unit, cap = EXCLUDED.cap, currency = EXCLUDED.currency",
        (
            site,
            policy.free_hours,
            policy.unit,
            Decimal(policy.fee_per_unit),
            policy.cap,
            policy.currency,
        ),
    )


def create_cabinet(
    conn: psycopg.Connection[Any],
    cabinet: str,
    site: str,
    compartments: Sequence[CompartmentSpec],
    *,
    name: str | None = None,
) -> None:
    """A cabinet with its compartments (ids as printed on the doors)."""
    try:
        validate_cabinet_id(cabinet)
        for spec in compartments:
            validate_compartment_id(spec.id)
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from exc
    for spec in compartments:
        if spec.size not in SIZES:
            raise ValidationFailed(f"unknown size {spec.size!r}", compartment=spec.id)
    if conn.execute("SELECT 1 FROM sites WHERE id = %s", (site,)).fetchone() is None:
        raise NotFound(f"no site {site}", site=site)
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO cabinets (id, site, name) VALUES (%s, %s, %s)", (cabinet, site, name)
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO compartments (cabinet, id, size, temperature_controlled,"
                    " temp_min_c, temp_max_c) VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        (
                            cabinet,
                            s.id,
                            s.size,
                            s.temperature_controlled,
                            s.temp_min_c,
                            s.temp_max_c,
                        )
                        for s in compartments
                    ],
                )
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(f"cabinet {cabinet} or one of its compartments exists") from exc
    except psycopg.errors.CheckViolation as exc:
        raise ValidationFailed(f"bad compartment: {exc.diag.message_primary}") from exc
    logger.info(
        "cabinet %s provisioned at %s with %d compartments", cabinet, site, len(compartments)
    )


def set_compartment(
    conn: psycopg.Connection[Any],
    cabinet: str,
    compartment: str,
    *,
    actor: str,
    now: datetime,
    enabled: bool | None = None,
    out_of_service: bool | None = None,
) -> bool:
    """Switch a compartment; returns True when the desired state changes.

    A disabled or out-of-service compartment gets no new parcels; a parcel
    already in it stays (an operator decides what happens to it).
    """
    with conn.transaction():
        row = conn.execute(
            "SELECT enabled, out_of_service FROM compartments WHERE cabinet = %s AND id = %s"
            " FOR NO KEY UPDATE",
            (cabinet, compartment),
        ).fetchone()
        if row is None:
            raise NotFound(
                f"no compartment {compartment} in cabinet {cabinet}",
                cabinet=cabinet,
                compartment=compartment,
            )
        new_enabled = row[0] if enabled is None else enabled
        new_oos = row[1] if out_of_service is None else out_of_service
        conn.execute(
            "UPDATE compartments SET enabled = %s, out_of_service = %s"
            " WHERE cabinet = %s AND id = %s",
            (new_enabled, new_oos, cabinet, compartment),
        )
        audit(
            conn,
            actor=actor,
            action="compartment.update",
            target_kind="compartment",
            target=f"{cabinet}/{compartment}",
            now=now,
            detail={"enabled": new_enabled, "out_of_service": new_oos},
        )
    return (row[0] and not row[1]) != (new_enabled and not new_oos)
