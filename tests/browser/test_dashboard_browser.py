"""The dashboard in a real browser: Debian's Chromium driven by Playwright, real server on loopback.

Screenshots land in ``test-artifacts/`` (gitignored) for a human to look at.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from sqlalchemy import select

from netdeploy.store.models import Event
from tests.conftest import REPO, start_server
from tests.integration.dashboard_helpers import (
    SQL_N1,
    SQL_N2,
    SQL_N3,
    agent_event,
    agent_token,
    event_count,
    form_cluster,
    move,
    report,
    running_server,
    seed_nodes,
    state_of,
)

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
# no sandbox (root in CI containers); nothing may reach for the network: this machine has none
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO / "test-artifacts"
WALL = {"width": 1920, "height": 1080}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not shutil.which(CHROMIUM):
        pytest.skip(
            "Debian's chromium is not installed: apt-get install chromium (./dev test does)"
        )
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


async def shot(page: Page, name: str, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"dashboard-{name}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    return path


def row(page: Page, mac: str):  # type: ignore[no-untyped-def]
    return page.locator("#n-" + mac.replace(":", ""))


async def open_live(browser: Browser, url: str, **context) -> Page:  # type: ignore[no-untyped-def]
    page = await (await browser.new_context(**{"viewport": WALL, **context})).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    await page.goto(url + "/")
    await expect(page.locator("#live")).to_have_text("live")
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def login(page: Page, token: str) -> None:
    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("button", name="Log out")).to_be_visible()
    await expect(page.locator("#live")).to_have_text("live")


async def test_page_lists_the_demo_cluster_and_progress_moves_without_reload(browser, tmp_path):
    async with running_server(tmp_path, public_read=True) as srv:
        page = await open_live(browser, srv.url)
        cluster = page.locator("article.cluster[data-cluster=sqlclu]")
        await expect(cluster.get_by_role("heading", name="sqlclu", exact=True)).to_be_visible()
        await expect(cluster.locator(".gate")).to_have_text("waiting for first node")
        await expect(row(page, SQL_N1).locator(".role")).to_have_text("first node")
        await expect(row(page, SQL_N2).locator(".role")).to_have_text("member")
        await page.evaluate("window.sameDocument = true")  # gone if the page reloads

        # the imaging agent reports through the rollout API, with its node's boot token
        await move(srv.ctx, SQL_N1, "pxe", reason="PXE-booted the imaging agent")
        token = await agent_token(srv.ctx, SQL_N1)
        bar = row(page, SQL_N1).locator("progress")
        await agent_event(
            srv.url, SQL_N1, token, state="imaging", progress=0, message="partitioning"
        )
        await expect(bar).to_be_visible()
        await expect(row(page, SQL_N1).locator(".msg")).to_have_text("partitioning")
        started = time.monotonic()
        await agent_event(srv.url, SQL_N1, token, state="imaging", progress=10)
        await expect(bar).to_have_js_property("value", 10)
        latency = time.monotonic() - started
        await asyncio.sleep(1.0)  # a second later, another report: now there is a rate
        await agent_event(
            srv.url, SQL_N1, token, state="imaging", progress=40, message="writing disk: 4 of 10 GB"
        )
        await expect(bar).to_have_js_property("value", 40)
        await expect(row(page, SQL_N1).locator(".rate")).to_contain_text("%/min · ETA ")
        await expect(row(page, SQL_N1).locator(".state")).to_have_text("imaging")
        # the agent's worded milestone is logged live, above the state change it followed
        await expect(page.locator("#log-rows tr").first).to_contain_text("writing disk: 4 of 10 GB")
        await expect(page.locator("#log-rows tr").nth(1)).to_contain_text("pxe → imaging")
        assert await page.evaluate("window.sameDocument") is True
        assert page.errors == []  # type: ignore[attr-defined]
        await shot(page, "wall-imaging")
        await page.reload()  # rendered afresh from the store; the tab kept its rates
        await expect(bar).to_have_js_property("value", 40)
        await expect(row(page, SQL_N1).locator(".rate")).to_contain_text("40% · ")
        await expect(row(page, SQL_N1).locator(".rate")).to_contain_text("%/min · ETA ")
        await expect(row(page, SQL_N1).locator(".msg")).to_have_text("writing disk: 4 of 10 GB")
        print(f"progress event to progress bar in the browser: {latency * 1000:.0f} ms")


async def test_a_message_sent_with_progress_shows_live(browser, tmp_path):
    async with running_server(tmp_path, public_read=True) as srv:
        await move(srv.ctx, SQL_N1, "pxe")
        token = await agent_token(srv.ctx, SQL_N1)
        await agent_event(srv.url, SQL_N1, token, state="imaging", progress=0)
        page = await open_live(browser, srv.url)
        await agent_event(srv.url, SQL_N1, token, state="imaging", progress=5, message="5 of 10 GB")
        await expect(row(page, SQL_N1).locator("progress")).to_have_js_property("value", 5)
        await expect(row(page, SQL_N1).locator(".msg")).to_have_text("5 of 10 GB", timeout=2000)


async def test_html_in_a_message_is_shown_as_text_live_and_rendered(browser, tmp_path):
    evil = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
    async with running_server(tmp_path, public_read=True) as srv:
        page = await open_live(browser, srv.url)
        await report(srv.ctx, SQL_N3, message=evil)
        await expect(row(page, SQL_N3).locator(".msg")).to_have_text(evil)
        await page.reload()
        await expect(row(page, SQL_N3).locator(".msg")).to_have_text(evil)
        assert await page.evaluate("window.pwned") is None
        assert await page.locator("td.msg img, td.msg script").count() == 0


async def test_admin_releases_a_held_node_from_the_page(browser, tmp_path):
    async with running_server(tmp_path, public_read=True) as srv:
        await move(srv.ctx, SQL_N2, "held", reason="held until the cluster is formed")
        page = await open_live(browser, srv.url)
        await expect(row(page, SQL_N2).get_by_role("button")).to_have_count(0)  # not logged in
        await login(page, srv.ctx.admin_token)
        release = row(page, SQL_N2).get_by_role("button", name="Release sql-n2")

        # not formed yet: the rollout core refuses (two nodes on unprotected shared storage)
        await release.click()
        await expect(page.get_by_role("alert")).to_contain_text("cluster sqlclu is not formed")
        assert await state_of(srv.ctx, SQL_N2) == "held"

        await form_cluster(srv.ctx)
        await expect(row(page, SQL_N1).locator(".state")).to_have_text("joined")
        await release.click()
        await expect(page.locator("#notice")).to_have_text("release sql-n2: done, now released")
        await expect(row(page, SQL_N2).locator(".state")).to_have_text("released")
        released = "held → released: released by dashboard admin from 127.0.0.1"
        await expect(page.locator("#log-rows tr", has_text=released)).to_have_count(1)
        # the gate moved on too, live: the gate event updates the cluster's badge
        gate = page.locator("article[data-cluster=sqlclu] .gate")
        await expect(gate).to_have_text("releasing")
        await expect(page.locator("#log-rows tr").first).to_contain_text("gate formed → releasing")
        assert await state_of(srv.ctx, SQL_N2) == "released"
        await expect(release).to_have_count(0)  # a released node offers no release
        await shot(page, "admin-released")


async def test_admin_fails_retries_and_resets_from_the_page(browser, tmp_path):
    async with running_server(tmp_path, public_read=True) as srv:
        await move(srv.ctx, SQL_N3, "imaging")
        page = await open_live(browser, srv.url)
        await login(page, srv.ctx.admin_token)
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept("bad disk")))
        await row(page, SQL_N3).get_by_role("button", name="Fail sql-n3").click()
        await expect(row(page, SQL_N3).locator(".state")).to_have_text("failed")
        await expect(page.locator("#log-rows tr").first).to_contain_text("bad disk")
        await row(page, SQL_N3).get_by_role("button", name="Retry sql-n3").click()
        await expect(row(page, SQL_N3).locator(".state")).to_have_text("registered")

        await move(srv.ctx, SQL_N2, "held")
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.dismiss()))
        await page.get_by_role("button", name="Reset cluster sqlclu").click()  # cancelled
        await expect(row(page, SQL_N2).locator(".state")).to_have_text("held")
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.get_by_role("button", name="Reset cluster sqlclu").click()
        await expect(row(page, SQL_N2).locator(".state")).to_have_text("registered")
        await expect(page.locator("#notice")).to_contain_text("cluster sqlclu reset: done")
        assert await state_of(srv.ctx, SQL_N2) == "registered"


async def test_actions_without_login_or_on_unknown_nodes_are_refused_visibly(browser, tmp_path):
    async with running_server(tmp_path, public_read=True) as srv:
        await move(srv.ctx, SQL_N2, "held")
        before = await event_count(srv.ctx)
        page = await open_live(browser, srv.url)
        status = await page.evaluate(
            """async (mac) => (await fetch('/actions/release', {method: 'POST',
                 headers: {'Accept': 'application/json'},
                 body: new URLSearchParams({mac})})).status""",
            SQL_N2,
        )
        assert status == 401
        await login(page, srv.ctx.admin_token)
        button = row(page, SQL_N2).get_by_role("button", name="Release sql-n2")
        await button.evaluate("b => b.value = '52:54:00:99:99:99'")  # a node nobody has
        await button.click()
        notice = page.get_by_role("alert")
        await expect(notice).to_have_text("no node with MAC 52:54:00:99:99:99; nothing was changed")
        await shot(page, "refused")
        assert await state_of(srv.ctx, SQL_N2) == "held"
        # nothing changed; the refusal without login is recorded (an auth event, issue 22)
        await asyncio.sleep(1)  # declared auth writes its refusals off the request path
        assert await event_count(srv.ctx) - await refusals(srv.ctx) == before


async def refusals(ctx) -> int:  # type: ignore[no-untyped-def]
    async with ctx.sessions() as session:
        rows = await session.scalars(select(Event.id).where(Event.kind.in_(("auth", "rejected"))))
        return len(rows.all())


async def test_the_page_resumes_after_the_stream_drops(browser, tmp_path):
    from netdeploy.http.events_routes import STREAMS

    async with running_server(tmp_path, public_read=True) as srv:
        page = await open_live(browser, srv.url)
        reader = next(iter(srv.ctx.bus.feed.open))  # the page's one place in the event feed
        reader.close()  # the stream ends, as for a client that fell behind the feed
        await expect(page.locator("#live")).to_have_text("reconnecting…")
        # nobody listening now: the page must get this from the store when it reconnects
        await move(srv.ctx, SQL_N3, "failed", reason="timeout", message="disk not found")
        await expect(row(page, SQL_N3).locator(".state")).to_have_text("failed")
        await expect(page.locator("#live")).to_have_text("live")
        await expect(row(page, SQL_N3).locator(".msg")).to_have_text("disk not found")
        await expect(page.locator("#log-rows tr").first).to_contain_text("→ failed: timeout")
        assert STREAMS  # imported to document where the server keeps its streams


async def test_500_nodes_render_and_stay_live(browser, tmp_path):
    async with running_server(tmp_path, public_read=True) as srv:
        macs = await seed_nodes(srv.ctx, 500)
        page = await (await browser.new_context(viewport=WALL)).new_page()
        started = time.monotonic()
        response = await page.goto(srv.url + "/")
        await expect(page.locator("#live")).to_have_text("live")
        loaded = time.monotonic() - started
        assert await page.locator("table.nodes tbody tr").count() == 508  # + the 8 demo nodes
        timing = await page.evaluate(
            """() => { const n = performance.getEntriesByType('navigation')[0];
                 return {transfer: n.transferSize, html: n.decodedBodySize,
                         dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd}; }"""
        )
        await report(srv.ctx, macs[499], message="rack-499 says hello")
        await expect(row(page, macs[499]).locator(".msg")).to_have_text("rack-499 says hello")
        headers = await response.all_headers()
        print(
            f"500 nodes: HTML {timing['html'] / 1024:.0f} KiB "
            f"({timing['transfer'] / 1024:.0f} KiB on the wire, {headers.get('content-encoding')}),"
            f" DOMContentLoaded {timing['dcl']:.0f} ms, load {timing['load']:.0f} ms, "
            f"live after {loaded * 1000:.0f} ms"
        )
        await shot(page, "500-nodes", full_page=False)


async def test_phone_layout_and_labels(browser, tmp_path):
    async with running_server(tmp_path, public_read=True) as srv:
        await move(srv.ctx, SQL_N1, "imaging")
        await report(srv.ctx, SQL_N1, progress=63.0, message="writing disk")
        page = await open_live(
            browser,
            srv.url,
            viewport={"width": 390, "height": 844},
            is_mobile=True,
            has_touch=True,
        )
        await shot(page, "phone")
        wide = await page.evaluate(
            """() => [...document.querySelectorAll('body *')]
                 .filter(e => e.getBoundingClientRect().right > 390.5)
                 .map(e => e.tagName + '.' + e.className + ' ' + e.getBoundingClientRect().right)"""
        )
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{width}px wide on a 390px phone, it scrolls sideways: {wide}"
        unlabeled = await page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select')]
                 .filter(e => e.labels.length === 0).map(e => e.outerHTML)"""
        )
        assert unlabeled == []
        await page.keyboard.press("Tab")  # the first stop is the skip link, then the login
        assert await page.evaluate("document.activeElement.textContent") == "Skip to content"


async def test_netdeploy_serve_asks_for_the_token_then_shows_the_demo(browser, tmp_path):
    """The real `netdeploy serve` process with the demo config (no public read)."""
    server = await asyncio.to_thread(start_server, tmp_path / "state")
    try:
        token = (tmp_path / "state" / "admin-token").read_text().strip()
        page = await (await browser.new_context(viewport=WALL)).new_page()
        await page.goto(server.url + "/")
        await expect(page.get_by_role("heading", name="sqlclu", exact=True)).to_have_count(0)
        await page.get_by_label("Admin token").fill("not-the-token")
        await page.get_by_role("button", name="Log in").click()
        await expect(page.get_by_role("alert")).to_contain_text("not the admin token")
        await page.get_by_label("Admin token").fill(token)
        await page.get_by_role("button", name="Log in").click()
        await expect(page.locator("#live")).to_have_text("live")
        await expect(page.get_by_role("heading", name="sqlclu", exact=True)).to_be_visible()
        for host in ("sql-n1", "sql-n2", "sql-n3", "web-1"):
            await expect(page.locator(f"tr[data-label={host}]")).to_have_count(1)
        await page.get_by_role("button", name="Log out").click()
        await expect(page.get_by_label("Admin token")).to_be_visible()
        status = await page.evaluate(
            """async () => (await fetch('/actions/reset', {method: 'POST',
                 body: new URLSearchParams({cluster: 'sqlclu'})})).status"""
        )
        assert status == 401  # logged out: the action is refused
    finally:
        await asyncio.to_thread(server.stop)


CONTRAST_JS = (Path(__file__).parent / "contrast.js").read_text()


async def test_every_state_is_readable_text_with_aa_contrast(browser, tmp_path):
    async with running_server(tmp_path) as srv:
        await move(srv.ctx, SQL_N1, "joined", message="cluster service healthy")
        await move(srv.ctx, SQL_N2, "failed", reason="image checksum mismatch")
        await move(srv.ctx, SQL_N3, "imaging")
        await report(srv.ctx, SQL_N3, progress=12.0)
        page = await (await browser.new_context(viewport=WALL)).new_page()
        await page.goto(srv.url + "/")
        await login(page, srv.ctx.admin_token)
        await move(srv.ctx, "52:54:00:00:20:01", "held")  # standalone: buttons appear live
        await expect(page.get_by_role("button", name="Release web-1")).to_be_visible()
        await row(page, SQL_N2).get_by_role("button", name="Retry sql-n2").focus()
        low = await page.evaluate(CONTRAST_JS)
        assert low == [], f"text below WCAG AA contrast (4.5:1): {low}"
        await shot(page, "admin-states")


async def test_event_log_filters_live_and_without_javascript(browser, tmp_path):
    async with running_server(tmp_path, public_read=True) as srv:
        await move(srv.ctx, SQL_N2, "pxe")
        page = await open_live(browser, srv.url)
        await page.get_by_label("Node", exact=True).fill("sql-n2")
        await page.get_by_role("button", name="Filter").click()
        log_nodes = page.locator("#log-rows tr td:nth-child(2)")
        await expect(log_nodes).to_have_text(["sql-n2", "sql-n2"])
        await report(srv.ctx, SQL_N1, message="not for this filter")
        await report(srv.ctx, SQL_N2, message="for this filter")
        await expect(log_nodes).to_have_text(["sql-n2"] * 3)
        await page.get_by_label("Node", exact=True).fill("nobody")
        await page.get_by_role("button", name="Filter").click()
        await expect(page.get_by_role("alert")).to_have_text(
            "no node with MAC or host name 'nobody'"
        )

        plain = await (await browser.new_context(java_script_enabled=False)).new_page()
        await plain.goto(srv.url + "/")
        await plain.get_by_label("Cluster", exact=True).select_option("sqlclu")
        await plain.get_by_role("button", name="Filter").click()
        assert "cluster=sqlclu" in plain.url
        nodes = await plain.locator("#log-rows tr td:nth-child(2)").all_inner_texts()
        assert nodes and "web-1" not in nodes and set(nodes) <= {"sql-n1", "sql-n2", "sql-n3"}
