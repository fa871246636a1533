"""The dashboard in headless Chromium against the demo's stack (issue 8's acceptance).

One :class:`~smartlocker.simulators.stack.Stack` for the module, as ``smartlocker
demo`` runs it: private Mosquitto with the contract's ACL, PostgreSQL, ingest, the
API (gunicorn, two workers) and workers as processes, and two sites with one
virtual cabinet each (the real edge agent on mock pins, doors moved by the
simulated world). Debian's ``chromium`` driven by Playwright. Screenshots go to
``artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright

from smartlocker.cloud.api.auth import Role, create_key
from smartlocker.simulators.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


def _wait(what: str, check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class World:
    """The running stack, its keys and its browser."""

    def __init__(self, stack: Stack, browser: Browser) -> None:
        self.stack = stack
        self.browser = browser
        assert stack.api is not None
        assert stack.database_url is not None
        self.base = stack.api.base_url
        #: Uncaught script errors of each tab (there must be none).
        self.errors: dict[Page, list[str]] = {}
        with psycopg.connect(stack.database_url) as conn:
            self.admin = stack.admin_key
            self.operator_a = create_key(
                conn, name="alpha operator", role=Role.OPERATOR, sites=["alpha"]
            ).token
            self.viewer_a = create_key(
                conn, name="alpha viewer", role=Role.VIEWER, sites=["alpha"]
            ).token

    def call(self, method: str, path: str, key: str, body: Any = None) -> requests.Response:
        return requests.request(
            method,
            self.base + path,
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    def page(
        self,
        key: str,
        path: str = "/dashboard/",
        setup: Callable[[BrowserContext], None] | None = None,
    ) -> Page:
        """A fresh tab (its own sessionStorage) signed in with ``key``, at ``path``;
        ``setup`` gets its context first (to route its requests, say)."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        if setup is not None:
            setup(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        self.errors[page] = errors
        page.goto(f"{self.base}/dashboard/signin?next={path}")
        page.fill("#key", key)
        page.click("button[type=submit]")
        page.wait_for_url(f"{self.base}{path}")
        return page

    def reserve(self, cabinet: str, reference: str, recipient: str) -> dict[str, Any]:
        """A small compartment of ``cabinet`` reserved through the API (as admin)."""
        response = self.call(
            "POST",
            "/api/v1/parcels",
            self.admin,
            {"cabinet": cabinet, "size": "s", "reference": reference, "recipient": recipient},
        )
        response.raise_for_status()
        parcel: dict[str, Any] = response.json()
        return parcel

    def kiosk(self, cabinet: str, code: str) -> dict[str, Any]:
        request = urllib.request.Request(
            self.stack.cabinet(cabinet).kiosk_url + "/kiosk/code",
            data=json.dumps({"code": code}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                result: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            result = json.loads(exc.read() or b"{}")
            exc.close()
        return result

    def compartment(self, cabinet: str, compartment: str) -> dict[str, Any]:
        detail = self.call("GET", f"/api/v1/cabinets/{cabinet}", self.admin).json()
        found: dict[str, Any] = next(c for c in detail["compartments"] if c["id"] == compartment)
        return found


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("dashboard")
    old_runtime = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(tmp / "run")  # pgserver's lock
    stack = Stack(tmp / "stack", held_open_s=120.0)
    try:
        stack.start()
        stack.provision("alpha", "Alpha station", 1)
        stack.provision("beta", "Beta station", 1)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                yield World(stack, browser)
            finally:
                browser.close()
    finally:
        stack.stop()
        if old_runtime is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = old_runtime


def cell(page: Page, compartment: str) -> Any:
    return page.locator(f'#grid [data-compartment="{compartment}"]')


def test_sign_in_shows_the_fleet_and_a_bad_key_is_refused(world: World) -> None:
    page = world.page(world.admin)
    expect(page.locator('tr[data-cabinet="alpha-01"]')).to_have_attribute("data-online", "true")
    expect(page.locator('tr[data-cabinet="beta-01"]')).to_have_attribute("data-online", "true")
    expect(page.locator("#whoami")).to_contain_text("admin")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    response = page.request.get(f"{world.base}/dashboard/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    shot(page, "overview")
    # Sign-out forgets the key: the next page asks for one again.
    page.click("#signout")
    page.wait_for_url("**/dashboard/signin")
    assert page.evaluate("sessionStorage.length") == 0
    page.goto(f"{world.base}/dashboard/alerts")
    page.wait_for_url("**/dashboard/signin?next=*")
    page.fill("#key", "slk_0000000000000000_" + "A" * 43)
    page.click("button[type=submit]")
    expect(page.locator("#error")).to_contain_text("refused")
    assert world.errors[page] == []
    page.context.close()


def test_the_grid_follows_a_courier_deposit_without_reload(world: World) -> None:
    page = world.page(world.operator_a, "/dashboard/cabinets/alpha-01")
    expect(cell(page, "A1")).to_be_visible()
    page.evaluate("window.__notReloaded = true")
    reserved = world.reserve("alpha-01", "DASH-1", "ana@example.org")
    compartment = reserved["compartment"]
    expect(cell(page, compartment)).to_have_attribute("data-state", "reserved")
    # The courier types the deposit code at the kiosk (once the cabinet has it).
    code = reserved["deposit_code"]
    _wait("the kiosk to take the code", lambda: world.kiosk("alpha-01", code).get("ok"))
    expect(cell(page, compartment)).to_have_attribute("data-state", "occupied")
    expect(cell(page, compartment).locator(".cell-dwell")).to_be_visible()
    assert page.evaluate("window.__notReloaded") is True
    cell(page, compartment).click()
    expect(page.locator("#detail-facts")).to_contain_text(reserved["id"])
    shot(page, "cabinet-occupied")
    # The parcel's page: found by its recipient, with its history.
    page.goto(f"{world.base}/dashboard/parcels?recipient=ana%40example.org")
    row = page.locator(f'tr[data-parcel="{reserved["id"]}"]')
    expect(row).to_have_attribute("data-state", "deposited")
    row.locator("a").first.click()
    expect(page.locator("#history")).to_contain_text("deposited")
    expect(page.locator("#resend")).to_be_visible()
    assert world.errors[page] == []
    page.context.close()


def test_a_change_made_before_the_live_feed_connects_still_reaches_the_grid(
    world: World,
) -> None:
    """The page reads its data while its live feed is still connecting: a change in
    between sends the page no note, so the feed's first ``hello`` makes it read again."""
    held: list[Route] = []
    page = world.page(
        world.operator_a,
        "/dashboard/cabinets/alpha-01",
        setup=lambda context: context.route(
            "**/dashboard/stream", lambda route: held.append(route)
        ),
    )
    expect(cell(page, "A1")).to_be_visible()
    for _ in range(200):  # the page asked for its feed (held back here)
        if held:
            break
        page.wait_for_timeout(25)
    assert held, "the page never asked for its live feed"
    expect(page.locator("#live")).to_have_attribute("data-state", "connecting")
    reserved = world.reserve("alpha-01", "LATE-1", "bo@example.org")
    compartment = reserved["compartment"]
    page.wait_for_timeout(300)  # the change's note went out to nobody
    expect(cell(page, compartment)).to_have_attribute("data-state", "free")
    held[0].continue_()
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    expect(cell(page, compartment)).to_have_attribute("data-state", "reserved")
    assert world.call("POST", f"/api/v1/parcels/{reserved['id']}/cancel", world.admin).ok
    expect(cell(page, compartment)).to_have_attribute("data-state", "free")
    assert world.errors[page] == []
    page.context.close()


def test_remote_unlock_from_the_page_opens_the_door(world: World) -> None:
    vc = world.stack.cabinet("alpha-01")
    target = next(
        c["id"]
        for c in world.call("GET", "/api/v1/cabinets/alpha-01", world.admin).json()["compartments"]
        if c["occupancy"] == "free" and c["door"] == "closed"
    )
    vc.world.leave_open(target)  # whoever opens it walks away: the page has time to look
    page = world.page(world.operator_a, "/dashboard/cabinets/alpha-01")
    cell(page, target).click()
    page.fill("#unlock-reason", "dashboard test: check the compartment")
    page.click("#unlock")
    expect(cell(page, target)).to_have_attribute("data-state", "door-open")
    expect(page.locator("#detail-status")).to_contain_text("succeeded")
    shot(page, "cabinet-door-open")
    vc.world.close(target)
    expect(cell(page, target)).to_have_attribute("data-state", "free")
    events = world.call(
        "GET", "/api/v1/events?cabinet=alpha-01&source=operator", world.admin
    ).json()["items"]
    assert any(e["type"].startswith("compartment.unlock") for e in events), events
    assert world.errors[page] == []
    page.context.close()


def test_a_forced_door_raises_an_alert_the_operator_acknowledges(world: World) -> None:
    page = world.page(world.operator_a, "/dashboard/alerts")
    vc = world.stack.cabinet("alpha-01")
    target = next(
        c["id"]
        for c in world.call("GET", "/api/v1/cabinets/alpha-01", world.admin).json()["compartments"]
        if c["door"] == "closed"
    )
    vc.world.force_open(target)
    row = page.locator("#alerts tr", has_text="forced_open").first
    expect(row).to_be_visible()  # arrives live, no reload
    alert_id = row.get_attribute("data-alert")
    assert row.get_attribute("data-acked") == "false"
    shot(page, "alerts")
    row.locator("button.ack").click()
    acked = page.locator(f'#alerts tr[data-alert="{alert_id}"]')
    expect(acked).to_have_attribute("data-acked", "true")
    alerts = world.call("GET", "/api/v1/alerts?cabinet=alpha-01", world.admin).json()["items"]
    mine = next(a for a in alerts if str(a["id"]) == alert_id)
    assert mine["acked_by"] == f"apikey:{world.operator_a.split('_')[1]}"
    assert mine["acked_at"]
    assert world.errors[page] == []
    page.context.close()


def test_a_viewer_sees_no_unlock_and_the_api_refuses_it_anyway(world: World) -> None:
    page = world.page(world.viewer_a, "/dashboard/cabinets/alpha-01")
    cell(page, "A2").click()
    expect(page.locator("#detail-facts")).to_contain_text("door")
    expect(page.locator("#unlock")).to_be_hidden()
    expect(page.locator("#toggle-enabled")).to_be_hidden()
    page.goto(f"{world.base}/dashboard/alerts")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    world.stack.cabinet("alpha-01").world.force_open("A2")
    unacked = page.locator('#alerts tr[data-acked="false"]', has_text="forced_open").first
    expect(unacked).to_be_visible()
    assert page.locator("button.ack").count() == 0
    refused = world.call(
        "POST",
        "/api/v1/cabinets/alpha-01/compartments/A2/unlock",
        world.viewer_a,
        {"reason": "a viewer tries anyway"},
    )
    assert refused.status_code == 403, refused.text
    assert world.errors[page] == []
    page.context.close()


def test_a_key_of_site_a_never_sees_site_b(world: World) -> None:
    page = world.page(world.operator_a)
    expect(page.locator('tr[data-cabinet="alpha-01"]')).to_be_visible()
    assert page.locator('[data-site="beta"]').count() == 0
    assert page.locator('tr[data-cabinet="beta-01"]').count() == 0
    page.goto(f"{world.base}/dashboard/cabinets/beta-01")
    expect(page.locator("#app")).to_have_attribute("data-missing", "true")
    expect(page.locator("#error")).to_contain_text("No cabinet beta-01")
    assert page.locator("#grid .cell").count() == 0
    page.context.close()
    # Live streams: an alpha key's never carries beta; the admin's does (so beta spoke).
    alpha = Reader(world, world.operator_a)
    admin = Reader(world, world.admin)
    for site in ("beta", "alpha"):
        world.call("POST", "/api/v1/parcels", world.admin, {"site": site, "size": "m"})
    world.stack.cabinet("beta-01").world.force_open("B3")
    _wait(
        "beta's door and alert to the admin",
        lambda: {"alert", "compartment"} <= admin.kinds("beta"),
    )
    _wait("alpha's reservation to alpha", lambda: "parcel" in alpha.kinds("alpha"))
    alpha.stop()
    admin.stop()
    assert alpha.notes
    assert {n["site"] for n in alpha.notes} == {"alpha"}, alpha.notes
    assert world.call("GET", "/api/v1/cabinets/beta-01", world.operator_a).status_code == 404


class Reader:
    """``/dashboard/stream`` read in a thread, as the page reads it (Bearer header)."""

    def __init__(self, world: World, key: str) -> None:
        self.notes: list[dict[str, Any]] = []
        self.hello: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._response = requests.get(
            world.base + "/dashboard/stream",
            headers={"Authorization": f"Bearer {key}"},
            stream=True,
            timeout=30,
        )
        assert self._response.status_code == 200
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        _wait("the stream's hello", lambda: self.hello is not None)

    def _read(self) -> None:
        try:
            self._lines()
        except (requests.RequestException, OSError, AttributeError, ValueError):
            if not self._stop.is_set():  # closing the response ends the read: expected
                raise

    def _lines(self) -> None:
        event = ""
        for line in self._response.iter_lines(decode_unicode=True):
            if self._stop.is_set():
                return
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if event == "hello":
                    self.hello = data
                else:
                    self.notes.append(data)

    def kinds(self, site: str) -> set[str]:
        return {n["kind"] for n in list(self.notes) if n.get("site") == site}

    def stop(self) -> None:
        self._stop.set()
        self._response.close()
        self._thread.join(5)
