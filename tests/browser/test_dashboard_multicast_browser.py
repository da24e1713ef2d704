"""The dashboard's Multicast section in Debian's Chromium while a real session runs: three
`netdeploy receive` processes over loopback, one of them stopped mid-transfer (SIGSTOP) so the
sender drops it and it finishes by HTTP once it runs again."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from playwright.async_api import expect

from netdeploy.http.multicast_view import TIMES
from tests.browser.test_dashboard_browser import CONTRAST_JS, WALL, browser, login, shot
from tests.conftest import REPO, sha256_of
from tests.integration.mc_harness import receive_argv, running_server, wait_for

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # the fixture, shared with the other dashboard browser tests

SQL = {"sql-n1": "52:54:00:00:10:01", "sql-n2": "52:54:00:00:10:02", "sql-n3": "52:54:00:00:10:03"}
SESSIONS_API = "/api/multicast/sessions"


async def receiver(url: str, out: os.PathLike, mac: str, token: str) -> asyncio.subprocess.Process:
    """`netdeploy receive` for one node; the test keeps the process to stop and resume it.
    It stands in for the node's agent, so it joins with the admin token (docs/security.md)."""
    return await asyncio.create_subprocess_exec(
        *receive_argv(url, out, "--mac", mac, "--json", "--quiet", token=token),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def words(text: str) -> str:
    return " ".join(text.split())


async def test_the_page_follows_a_session_and_shows_the_dropped_receiver(browser, tmp_path):
    # 8 Mbit/s: the 3 MiB image takes ~3 s, long enough to watch; the cluster's session
    # starts when its three nodes listen (min_receivers above that, max_wait far away)
    async with running_server(
        tmp_path, max_rate=8, min_receivers=5, max_wait=600, slow_receiver_timeout=0.6
    ) as server:
        page = await (await browser.new_context(viewport=WALL)).new_page()
        polls: list[str] = []
        errors: list[str] = []
        page.on("request", lambda r: polls.append(r.url) if SESSIONS_API in r.url else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.goto(server.url + "/")
        await login(page, server.ctx.admin_token)  # the harness keeps public_read off
        section = page.locator("#multicast")
        await expect(section.locator("#mc-empty")).to_contain_text("No multicast sessions yet")
        assert polls == []  # idle: nothing to poll

        admin = server.ctx.admin_token
        procs = {h: await receiver(server.url, tmp_path / h, mac, admin) for h, mac in SQL.items()}

        async def stall_sql_n3() -> None:
            """sql-n3 goes silent mid-transfer; it runs again once the session is over."""
            await wait_for(
                lambda: any(s.sent_slices > 30 for s in server.service.sessions.values())
            )
            procs["sql-n3"].send_signal(signal.SIGSTOP)
            try:
                await wait_for(lambda: server.service.finished, timeout=30)
            finally:
                procs["sql-n3"].send_signal(signal.SIGCONT)

        stall = asyncio.create_task(stall_sql_n3())
        try:
            # the joins and the start arrive as multicast events on the page's stream
            running = section.locator("#mc-sessions article")
            await expect(running.locator(".m-running")).to_have_text("running", timeout=15000)
            await expect(running.locator(".mtitle")).to_have_text("w2k3-ent-sp1 → sqlclu")
            hosts = running.locator("tbody tr th .host")  # MACs shown as the nodes' names
            await expect(hosts).to_have_text(["sql-n1", "sql-n2", "sql-n3"])
            await stall
            outputs = {h: (await p.communicate())[0].decode() for h, p in procs.items()}
        finally:
            stall.cancel()
            for p in procs.values():
                if p.returncode is None:
                    p.kill()
                    await p.wait()
        for host, proc in procs.items():  # every copy verified, sql-n3's finished by HTTP
            assert proc.returncode == 0, outputs[host]
            assert sha256_of(tmp_path / host) == server.sha256

        # the finished session, live: two done, the stopped one dropped and why
        done = section.locator("#mc-finished article").first
        await expect(done.locator(".m-finished")).to_have_text("finished")
        dropped = done.locator("tbody tr", has=page.locator(".host", has_text="sql-n3"))
        await expect(dropped.locator(".r-dropped")).to_have_text("dropped")
        await expect(dropped.locator(".via")).to_have_text("finishing by HTTP")
        await expect(dropped.locator(".msg")).not_to_be_empty()
        for host in ("sql-n1", "sql-n2"):
            good = done.locator("tbody tr", has=page.locator(".host", has_text=host))
            await expect(good.locator(".r-done")).to_have_text("done")
            await expect(good.locator(".rate")).to_have_text("100%")
            await expect(good.locator(".msg")).to_contain_text("verified after")
        [data] = server.service.finished
        sent = f"{data['bytes_sent'] / data['size']:.2f}{TIMES} the image (3.0 MiB)"
        await expect(done.locator(".sent")).to_contain_text(sent)
        await expect(section.locator("#mc-sessions article")).to_have_count(0)
        await expect(page.locator("#mc-status")).to_have_text("No multicast session running.")
        assert polls, "the page never refreshed the section while the session ran"
        await shot(page, "multicast")

        # nothing runs: the page stops asking (it polls every 2 s while a session runs)
        asked = len(polls)
        await asyncio.sleep(2.6)
        assert len(polls) == asked, polls[asked:]
        low = await page.evaluate(CONTRAST_JS)
        assert low == [], f"text below WCAG AA contrast (4.5:1): {low}"

        # what the script built is what the server renders
        live_text = words(await section.inner_text())
        await page.reload()
        await expect(page.locator("#live")).to_have_text("live")
        assert words(await section.inner_text()) == live_text
        assert errors == []

        await page.set_viewport_size({"width": 390, "height": 844})  # a phone
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{width}px wide on a 390px phone: it scrolls sideways"
