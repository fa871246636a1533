"""``/events`` (the audit trail), ``/cabinets/{cabinet}/telemetry`` and ``/stats/occupancy``.

The audit trail merges what cabinets reported (ingest's ``events`` table) with what
operators did (``audit_log``), newest first, each row carrying the site it belongs
to, so a key sees only its own sites' history.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint
from psycopg import sql

from smartlocker.cloud.timeseries import telemetry_rollup
from smartlocker.protocol.ids import CABINET_ID_PATTERN

from .app import state
from .auth import current_principal
from .db import get_conn
from .errors import Unprocessable
from .models import (
    Event,
    EventList,
    EventQuery,
    OccupancyPoint,
    OccupancyQuery,
    OccupancySeries,
    TelemetryBucket,
    TelemetryQuery,
    TelemetrySeries,
)
from .pagination import decode_cursor, encode_cursor
from .roles import ANYONE
from .routing import operation
from .scope import cabinet_site

__all__ = ["MAX_POINTS", "bp", "bucket_width"]

bp = Blueprint("insight", __name__)

#: At most this many buckets (times cabinets) in one answer.
MAX_POINTS = 10_000
#: The buckets' origin, as ``smartlocker.cloud.timeseries`` aligns them (a Monday).
_ORIGIN = datetime.fromisoformat("2000-01-03T00:00:00+00:00")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# One row per cabinet event and per operator action, with the site each belongs to.
# events.body is json (migration 0010), audit_log.detail jsonb: the few operator rows
# are cast, not every event row in the range. The events branch is served by
# events_dedup (cabinet, ts, seq): one cabinet over a time range, or each of a site's
# cabinets over it.
_TRAIL = """
SELECT * FROM (
    SELECT 'e:' || e.cabinet || ':' || e.seq || ':' || e.id AS id, 'cabinet' AS source,
           e.ts AS at, e.type, cab.site, e.cabinet, e.compartment, NULL::text AS actor,
           e.body AS detail
    FROM events e JOIN cabinets cab ON cab.id = e.cabinet
    WHERE (%(cabinet)s::text IS NULL OR e.cabinet = %(cabinet)s)
      AND (%(since)s::timestamptz IS NULL OR e.ts >= %(since)s)
      AND (%(until)s::timestamptz IS NULL OR e.ts < %(until)s)
      AND (%(at)s::timestamptz IS NULL OR e.ts <= %(at)s)
    UNION ALL
    SELECT 'o:' || lpad(a.id::text, 19, '0'), 'operator', a.at, a.action, t.site, t.cabinet,
           t.compartment, a.actor, a.detail::json
    FROM audit_log a
    LEFT JOIN LATERAL (
        SELECT CASE a.target_kind
                 WHEN 'site' THEN a.target
                 ELSE (SELECT site FROM cabinets WHERE id = c.cab) END AS site,
               c.cab AS cabinet, c.comp AS compartment
        FROM (SELECT CASE a.target_kind
                       WHEN 'cabinet' THEN a.target
                       WHEN 'compartment' THEN split_part(a.target, '/', 1)
                       WHEN 'parcel' THEN (SELECT cabinet FROM parcels WHERE id = a.target)
                       WHEN 'alert' THEN
                         (SELECT cabinet FROM alerts WHERE a.target ~ '^[0-9]{{1,18}}$'
                                                        AND id = a.target::bigint)
                     END AS cab,
                     CASE a.target_kind
                       WHEN 'compartment' THEN split_part(a.target, '/', 2)
                     END AS comp) c
    ) t ON true
    WHERE (%(since)s::timestamptz IS NULL OR a.at >= %(since)s)
      AND (%(until)s::timestamptz IS NULL OR a.at < %(until)s)
      AND (%(at)s::timestamptz IS NULL OR a.at <= %(at)s)
) trail
WHERE {scope}
  AND (%(source)s::text IS NULL OR source = %(source)s)
  AND (%(site)s::text IS NULL OR site = %(site)s)
  AND (%(cabinet)s::text IS NULL OR cabinet = %(cabinet)s)
  AND (%(compartment)s::text IS NULL OR compartment = %(compartment)s)
  AND (%(type)s::text IS NULL OR type = %(type)s)
  AND (%(at)s::timestamptz IS NULL OR (at, id) < (%(at)s, %(id)s))
ORDER BY at DESC, id DESC
LIMIT %(limit)s
"""


def bucket_width(text: str) -> timedelta:
    """``5m`` → 5 minutes (the pattern is checked by the query model)."""
    return timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])


def _window(
    since: datetime | None, until: datetime | None, width: timedelta, default: timedelta
) -> tuple[datetime, datetime]:
    end = until or state().clock()
    try:
        start = since or end - default
    except OverflowError:
        raise Unprocessable("the time range is out of bounds", slug="bad-time-range") from None
    if start >= end:
        raise Unprocessable("since must be before until", slug="bad-time-range")
    return start, end


@operation(
    bp,
    "GET",
    "/events",
    summary="The audit trail",
    roles=ANYONE,
    query=EventQuery,
    response=EventList,
)
def list_events(query: EventQuery) -> EventList:
    """Cabinet events and operator actions, newest first; filter by site, cabinet,
    compartment, type (``door_opened``, ``compartment.unlock.operator`` …) and time."""
    principal = current_principal()
    if principal.sites is None:
        scope: sql.Composable = sql.SQL("TRUE")
    else:
        scope = sql.SQL("site = ANY(%(scope)s)")
    at, last_id = decode_cursor(query.cursor, [datetime, str]) if query.cursor else (None, None)
    params: dict[str, Any] = {
        "scope": sorted(principal.sites or ()),
        "source": query.source,
        "site": query.site,
        "cabinet": query.cabinet,
        "compartment": query.compartment,
        "type": query.type,
        "since": query.since,
        "until": query.until,
        "at": at,
        "id": last_id,
        "limit": query.limit + 1,
    }
    rows = get_conn().execute(sql.SQL(_TRAIL).format(scope=scope), params).fetchall()
    items = [
        Event(
            id=r[0],
            source=r[1],
            at=r[2],
            type=r[3],
            site=r[4],
            cabinet=r[5],
            compartment=r[6],
            actor=r[7],
            detail=r[8],
        )
        for r in rows[: query.limit]
    ]
    more = len(rows) > query.limit
    cursor = encode_cursor([items[-1].at, items[-1].id]) if more else None
    return EventList(items=items, next_cursor=cursor)


@operation(
    bp,
    "GET",
    "/cabinets/{cabinet}/telemetry",
    summary="Telemetry in time buckets",
    roles=ANYONE,
    path_params={"cabinet": CABINET_ID_PATTERN},
    query=TelemetryQuery,
    response=TelemetrySeries,
    errors=(422,),
)
def telemetry(cabinet: str, query: TelemetryQuery) -> TelemetrySeries:
    """Readings of one cabinet bucketed by ``bucket`` (``30s``, ``5m``, ``1h``, ``1d``)
    over ``since``/``until`` (default: the last 24 hours)."""
    conn = get_conn()
    cabinet_site(conn, current_principal(), cabinet)
    width = bucket_width(query.bucket)
    start, end = _window(query.since, query.until, width, timedelta(hours=24))
    if (end - start) / width > MAX_POINTS:
        raise Unprocessable(
            f"more than {MAX_POINTS} buckets; widen the bucket", slug="too-many-points"
        )
    rows = telemetry_rollup(conn, cabinet, width, start, end, edition=state().edition(conn))
    return TelemetrySeries(
        cabinet=cabinet,
        bucket=query.bucket,
        items=[
            TelemetryBucket(
                bucket=r.start,
                samples=r.readings,
                cpu_temp_c_avg=r.cpu_temp_avg,
                cpu_temp_c_max=r.cpu_temp_max,
                outbox_depth_max=r.outbox_depth_max,
                compartment_temps_c=r.compartment_temps,
            )
            for r in rows
        ],
    )


@operation(
    bp,
    "GET",
    "/stats/occupancy",
    summary="Occupancy per cabinet over time",
    roles=ANYONE,
    query=OccupancyQuery,
    response=OccupancySeries,
    errors=(422,),
)
def occupancy(query: OccupancyQuery) -> OccupancySeries:
    """Per bucket and cabinet: compartments, and how many held a parcel (``occupied``)
    or a reservation (``reserved``) at any moment of the bucket, and how long those
    parcels had been inside (``dwell_avg_s``, ``dwell_max_s``) (default: last 7 days)."""
    principal = current_principal()
    width = bucket_width(query.bucket)
    start, end = _window(query.since, query.until, width, timedelta(days=7))
    conn = get_conn()
    scope, params = principal.site_filter("site")
    cabinets = conn.execute(
        sql.SQL(
            "SELECT id, site FROM cabinets WHERE {} AND (%s::text IS NULL OR site = %s)"
            " AND (%s::text IS NULL OR id = %s) ORDER BY id"
        ).format(scope),
        [*params, query.site, query.site, query.cabinet, query.cabinet],
    ).fetchall()
    buckets = int((end - start) / width) + 1
    if buckets * max(len(cabinets), 1) > MAX_POINTS:
        raise Unprocessable(
            f"more than {MAX_POINTS} points; widen the bucket", slug="too-many-points"
        )
    if not cabinets:
        return OccupancySeries(bucket=query.bucket, items=[])
    rows = conn.execute(
        """
        WITH b AS (
            SELECT generate_series(date_bin(%(w)s, %(start)s, %(origin)s),
                                   %(end)s - interval '1 microsecond', %(w)s) AS b
        ), cab AS (
            SELECT c.id, c.site, (SELECT count(*) FROM compartments WHERE cabinet = c.id) AS n
            FROM cabinets c WHERE c.id = ANY(%(ids)s)
        )
        SELECT b.b, cab.site, cab.id, cab.n, inside.n, inside.dwell_avg, inside.dwell_max,
            (SELECT count(*) FROM parcels p WHERE p.cabinet = cab.id
               AND p.reserved_at < b.b + %(w)s
               AND coalesce(p.deposited_at, p.closed_at, 'infinity') > b.b)
        FROM b CROSS JOIN cab
        CROSS JOIN LATERAL (
            -- The parcels inside at some moment of the bucket, and how long each had
            -- been inside at the bucket's end (or when it left, or now).
            SELECT count(*) AS n, avg(d.s) AS dwell_avg, max(d.s) AS dwell_max
            FROM parcels p
            CROSS JOIN LATERAL (SELECT extract(epoch FROM least(
                b.b + %(w)s, coalesce(p.picked_up_at, p.closed_at, 'infinity'), %(end)s
            ) - p.deposited_at)::float8 AS s) d
            WHERE p.cabinet = cab.id AND p.deposited_at < b.b + %(w)s
              AND coalesce(p.picked_up_at, p.closed_at, 'infinity') > b.b
        ) inside
        ORDER BY b.b, cab.id
        """,
        {
            "w": width,
            "start": start,
            "end": end,
            "origin": _ORIGIN,
            "ids": [c[0] for c in cabinets],
        },
    ).fetchall()
    return OccupancySeries(
        bucket=query.bucket,
        items=[
            OccupancyPoint(
                bucket=r[0],
                site=r[1],
                cabinet=r[2],
                compartments=r[3],
                occupied=r[4],
                reserved=r[7],
                dwell_avg_s=r[5],
                dwell_max_s=r[6],
            )
            for r in rows
        ],
    )
