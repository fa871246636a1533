"""Compartment allocation: the smallest free compartment that fits.

Concurrency-safe in two layers. :func:`allocate` runs ``SELECT … FOR NO KEY UPDATE OF
c SKIP LOCKED`` on compartments whose own ``occupancy`` column says ``free``: a
concurrent reservation either holds the row lock (skipped) or has committed
``occupancy = 'reserved'`` on it (PostgreSQL re-checks the condition on the new
row version, so it is skipped too). When that finds nothing while a compartment
is free as committed (held for a moment, e.g. by ingest recording a door event),
it looks again shortly, for at most 2 s, so a busy row is not mistaken for a full
cabinet.
Under all of that, the partial unique index ``parcels_one_active_per_compartment``
is the database's own guarantee that no compartment ever holds two active parcels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg

from ..errors import NoCompartmentAvailable, NotFound, ValidationFailed

__all__ = ["SIZES", "Allocation", "allocate"]

#: Compartment sizes, smallest first (the ``compartment_sizes`` table agrees).
SIZES = ("xs", "s", "m", "l", "xl")


_CANDIDATE = """
        SELECT c.cabinet, c.id, c.size
        FROM compartments c
        JOIN cabinets k ON k.id = c.cabinet
        JOIN compartment_sizes z ON z.size = c.size
        WHERE k.site = %(site)s
          AND (%(cabinet)s::text IS NULL OR c.cabinet = %(cabinet)s)
          AND c.occupancy = 'free' AND c.enabled AND NOT c.out_of_service
          AND z.rank >= (SELECT rank FROM compartment_sizes WHERE size = %(size)s)
          AND (c.temperature_controlled OR NOT %(temperature)s)
        ORDER BY z.rank, c.temperature_controlled, c.cabinet, c.id
        LIMIT 1
        FOR NO KEY UPDATE OF c
"""


#: The same condition, without locking: is anything free as committed?
_ANY_FREE = _CANDIDATE.replace("SELECT c.cabinet, c.id, c.size", "SELECT 1").replace(
    "FOR NO KEY UPDATE OF c", ""
)
#: How long a reservation waits for a free compartment that is held for a moment.
_BUSY_WAIT_S = 2.0
_BUSY_POLL_S = 0.01


@dataclass(frozen=True, slots=True)
class Allocation:
    site: str
    cabinet: str
    compartment: str
    size: str


def allocate(
    conn: psycopg.Connection[Any],
    *,
    size: str,
    site: str | None = None,
    cabinet: str | None = None,
    temperature: bool = False,
) -> Allocation:
    """Lock the best free compartment for a parcel of ``size``, in the caller's transaction.

    Search one ``cabinet``, or every cabinet of ``site``. With ``temperature``
    only temperature-controlled compartments qualify; without it they are taken
    after the ordinary compartments of the same size (size always comes first).
    The caller must insert the parcel and set the compartment's occupancy before
    committing (see
    :func:`smartlocker.cloud.rules.parcels.reserve_parcel`).
    """
    if size not in SIZES:
        raise ValidationFailed(f"unknown size {size!r} (one of {', '.join(SIZES)})", size=size)
    if cabinet is None and site is None:
        raise ValidationFailed("give a cabinet or a site")
    if cabinet is not None:
        found = conn.execute("SELECT site FROM cabinets WHERE id = %s", (cabinet,)).fetchone()
        if found is None:
            raise NotFound(f"no cabinet {cabinet}", cabinet=cabinet)
        if site is not None and found[0] != site:
            raise NotFound(f"no cabinet {cabinet} at site {site}", cabinet=cabinet, site=site)
        site = found[0]
    elif conn.execute("SELECT 1 FROM sites WHERE id = %s", (site,)).fetchone() is None:
        raise NotFound(f"no site {site}", site=site)
    params = {"site": site, "cabinet": cabinet, "size": size, "temperature": temperature}
    # Skip rows other transactions hold. When that finds nothing but some candidate
    # is free as committed, that row is only held for a moment (ingest recording a
    # door event, a reservation still in flight that may roll back): look again
    # shortly, for a bounded time. Waiting on the row lock itself instead can
    # deadlock among many waiting reservations (measured), so this polls.
    deadline = time.monotonic() + _BUSY_WAIT_S
    while True:
        row = conn.execute(_CANDIDATE + " SKIP LOCKED", params).fetchone()
        if row is not None or time.monotonic() >= deadline:
            break
        if conn.execute(_ANY_FREE, params).fetchone() is None:
            break  # really full
        time.sleep(_BUSY_POLL_S)
    if row is None:
        where = f"cabinet {cabinet}" if cabinet else f"site {site}"
        need = f"{size}{' temperature-controlled' if temperature else ''}"
        raise NoCompartmentAvailable(
            f"no free {need} compartment at {where}",
            site=site,
            cabinet=cabinet,
            size=size,
            temperature=temperature,
        )
    assert site is not None
    return Allocation(site, row[0], row[1], row[2])
