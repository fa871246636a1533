"""Allocation: the smallest free compartment that fits, never one compartment twice."""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from datetime import timedelta

import psycopg
import pytest

from smartlocker.cloud.errors import Conflict, NoCompartmentAvailable, NotFound, ValidationFailed
from smartlocker.cloud.keys import CloudKeys
from smartlocker.cloud.rules import cancel_parcel, reserve_parcel
from smartlocker.cloud.rules.fleet import (
    CompartmentSpec,
    create_cabinet,
    create_site,
    set_compartment,
)
from tests.cloud.conftest import T0

Conn = psycopg.Connection[tuple[object, ...]]


def _reserve(conn: Conn, keys: CloudKeys, size: str, **kw: object) -> str:
    r = reserve_parcel(conn, keys, size=size, cabinet="cab-1", actor="test", now=T0, **kw)  # type: ignore[arg-type]
    return r.compartment


def test_smallest_that_fits_then_larger(conn: Conn, keys: CloudKeys) -> None:
    # s parcels take A1, A2, then the medium ones: ordinary B1 before the cold K1, then C1.
    assert [_reserve(conn, keys, "s") for _ in range(5)] == ["A1", "A2", "B1", "K1", "C1"]
    with pytest.raises(NoCompartmentAvailable) as info:
        _reserve(conn, keys, "xs")
    assert info.value.type == "no-compartment-available"
    assert info.value.status == 409


def test_temperature_when_asked(conn: Conn, keys: CloudKeys) -> None:
    assert _reserve(conn, keys, "s", temperature=True) == "K1"
    with pytest.raises(NoCompartmentAvailable, match="temperature-controlled"):
        _reserve(conn, keys, "s", temperature=True)


def test_disabled_and_out_of_service_compartments_are_skipped(conn: Conn, keys: CloudKeys) -> None:
    set_compartment(conn, "cab-1", "A1", actor="op", now=T0, enabled=False)
    set_compartment(conn, "cab-1", "A2", actor="op", now=T0, out_of_service=True)
    assert _reserve(conn, keys, "s") == "B1"


def test_a_cancelled_reservation_frees_the_compartment(conn: Conn, keys: CloudKeys) -> None:
    r = reserve_parcel(conn, keys, size="l", cabinet="cab-1", actor="t", now=T0)
    with pytest.raises(NoCompartmentAvailable):
        _reserve(conn, keys, "l")
    cancel_parcel(conn, r.parcel, now=T0 + timedelta(minutes=1), actor="t")
    assert _reserve(conn, keys, "l") == "C1"


def test_bad_requests(conn: Conn, keys: CloudKeys) -> None:
    with pytest.raises(ValidationFailed, match="unknown size"):
        _reserve(conn, keys, "huge")
    with pytest.raises(NotFound):
        reserve_parcel(conn, keys, size="s", cabinet="nope", actor="t", now=T0)
    with pytest.raises(ValidationFailed, match="past"):
        _reserve(conn, keys, "s", deadline=T0 - timedelta(hours=1))
    with pytest.raises(ValidationFailed, match="parcel id"):
        _reserve(conn, keys, "s", parcel="no spaces")
    _reserve(conn, keys, "s", parcel="ref-42")
    with pytest.raises(Conflict, match="exists"):
        _reserve(conn, keys, "s", parcel="ref-42")


def test_by_site_searches_every_cabinet(conn: Conn, keys: CloudKeys) -> None:
    create_cabinet(conn, "cab-2", "site-1", [CompartmentSpec("X1", "xs")])
    r = reserve_parcel(conn, keys, size="xs", site="site-1", actor="t", now=T0)
    assert (r.cabinet, r.compartment) == ("cab-2", "X1")


def test_the_database_refuses_two_active_parcels_in_one_compartment(conn: Conn) -> None:
    insert = (
        "INSERT INTO parcels (id, site, cabinet, compartment, size, state, reserved_at,"
        " created_by) VALUES (%s, 'site-1', 'cab-1', 'A1', 's', %s, now(), 't')"
    )
    conn.execute(insert, ("p1", "deposited"))
    conn.execute(insert, ("p0", "picked_up"))  # finished parcels do not count
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(insert, ("p2", "reserved"))


REQUESTS = 200
COMPARTMENTS = 50
CONNECTIONS = 60  # the private clusters allow 100 connections each


def test_200_concurrent_reservations_for_50_compartments(core_url: str, keys: CloudKeys) -> None:
    with psycopg.connect(core_url, autocommit=True) as setup:
        create_site(setup, "busy", "Busy station")
        create_cabinet(
            setup, "wall", "busy", [CompartmentSpec(f"S{i:02d}", "s") for i in range(COMPARTMENTS)]
        )
    pool: queue.Queue[Conn] = queue.Queue()
    for _ in range(CONNECTIONS):
        pool.put(psycopg.connect(core_url, autocommit=True))
    start = threading.Barrier(REQUESTS)
    results: list[str] = []
    refused: list[NoCompartmentAvailable] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def request(n: int) -> None:
        start.wait()
        c = pool.get()
        try:
            r = reserve_parcel(c, keys, size="s", site="busy", actor=f"courier-{n}", now=T0)
            with lock:
                results.append(r.compartment)
        except NoCompartmentAvailable as exc:
            with lock:
                refused.append(exc)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            pool.put(c)

    threads = [threading.Thread(target=request, args=(n,)) for n in range(REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    while not pool.empty():
        pool.get().close()

    assert errors == []
    assert len(results) == COMPARTMENTS
    assert len(refused) == REQUESTS - COMPARTMENTS
    assert all("no free s compartment" in str(e) for e in refused)
    assert Counter(results).most_common(1)[0][1] == 1  # no compartment handed out twice
    with psycopg.connect(core_url) as check:
        rows = check.execute(
            "SELECT compartment, count(*) FROM parcels WHERE state = 'reserved'"
            " GROUP BY compartment HAVING count(*) > 1"
        ).fetchall()
        assert rows == []
        occupancy = check.execute(
            "SELECT occupancy, count(*) FROM compartments WHERE cabinet = 'wall' GROUP BY 1"
        ).fetchall()
        assert occupancy == [("reserved", COMPARTMENTS)]


def test_a_free_compartment_held_by_ingest_for_a_moment_is_still_found(
    core_url: str, conn: Conn, keys: CloudKeys
) -> None:
    for comp in ("A2", "B1", "C1", "K1"):
        set_compartment(conn, "cab-1", comp, actor="op", now=T0, enabled=False)
    found: list[str | BaseException] = []
    with psycopg.connect(core_url) as ingest:
        # ingest records a door event on A1 and has not committed yet
        ingest.execute(
            "UPDATE compartments SET door = 'open' WHERE cabinet = 'cab-1' AND id = 'A1'"
        )

        def reserve() -> None:
            try:
                found.append(_reserve(conn, keys, "s"))
            except BaseException as exc:
                found.append(exc)

        worker = threading.Thread(target=reserve)
        worker.start()
        time.sleep(0.3)
        assert found == []  # waiting, not refused
        ingest.commit()
        worker.join(timeout=10)
    assert found == ["A1"]
