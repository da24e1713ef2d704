"""Issue 22, "Trust the gate": node identity, token lifecycle, declared auth, secrets at rest.

A real netdeploy HTTP server with the demo lab (sqlclu: sql-n1 first, sql-n2 and sql-n3 held),
driven as the imaging agent, the started OS and an attacker on the boot LAN would.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import stat
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import update

from netdeploy.boot.tftp import virtual_file
from netdeploy.inventory import NodeState
from netdeploy.rollout import actions
from netdeploy.rollout.errors import Forbidden
from netdeploy.rollout.reports import HealthReport
from netdeploy.store.models import Cluster, Node
from tests.integration.conftest_boot import (
    DEMO,
    ROOT,
    Server,
    boot_server,
    boot_token,
    claim,
    token_in,
)

N1, N2 = "52:54:00:00:10:01", "52:54:00:00:10:02"
DEMO_SECRETS = ("Demo-Only-Secret-1", "Demo-Only-Admin-1", "XXXXX-XXXXX-XXXXX-XXXXX-XXXXX")


async def call(
    url: str, method: str, path: str, token: str | None = None, body: object = None
) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url + path, json=body, headers=headers) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, {"text": text}


class Agent:
    """The imaging agent of one node: boots (boot script), claims, reports, fetches files."""

    def __init__(self, srv: Server, mac: str):
        self.srv, self.mac = srv, mac
        self.secret = secrets.token_hex(24)
        self.report_token = ""

    async def boot_and_claim(self) -> None:
        token = await boot_token(self.srv.url, self.mac)
        got = await claim(self.srv.url, self.mac, token, self.secret)
        assert got.status == 200, got.text

    async def event(self, state: str, **extra: object) -> tuple[int, dict]:
        body = {"state": state, **extra}
        return await call(self.srv.url, "POST", f"/api/nodes/{self.mac}/events", self.secret, body)

    async def sysprep(self) -> None:
        """Fetch sysprep.inf as inject_files does; keep the report token Mini-Setup will use."""
        path = f"/nodes/{self.mac}/files/sysprep.inf"
        status, body = await call(self.srv.url, "GET", path, self.secret)
        assert status == 200, body
        found = re.search(r"report\.vbs \S+ (\S+) (health|joined)", body["text"])
        assert found, body
        self.report_token = found.group(1)

    async def image(self) -> None:
        assert (await self.event("imaging", progress=0))[0] == 200
        await self.sysprep()
        status, body = await self.event("imaged")
        assert status == 200, body


async def health(srv: Server, mac: str, token: str) -> tuple[int, dict]:
    return await call(srv.url, "POST", f"/api/nodes/{mac}/health", token, {"healthy": True})


async def age_answer_files(srv: Server, mac: str) -> None:
    """Let rollout.report_quiet pass (as the minutes of Mini-Setup would)."""
    async with srv.ctx.sessions() as session, session.begin():
        await session.execute(
            update(Node)
            .where(Node.mac == mac)
            .values(report_at=datetime.now(UTC) - timedelta(hours=1))
        )


async def cluster(srv: Server) -> Cluster:
    async with srv.ctx.sessions() as session:
        found = await session.get(Cluster, "sqlclu")
        assert found is not None
        return found


async def state(srv: Server, mac: str) -> str:
    node = await srv.node(mac)
    assert node is not None
    return node.state


async def first_released_second_held(srv: Server) -> tuple[Agent, Agent]:
    n1, n2 = Agent(srv, N1), Agent(srv, N2)
    for agent in (n1, n2):
        await agent.boot_and_claim()
    await n2.image()
    assert await state(srv, N2) == "held"
    return n1, n2


async def test_the_whole_legitimate_sequence_forms_the_cluster(tmp_path: Path) -> None:
    async with boot_server(tmp_path) as srv:
        n1, _ = await first_released_second_held(srv)
        await n1.image()
        assert (await n1.event("starting"))[0] == 200
        # too early: a machine racing sql-n1 for its boot would not have shown up yet
        status, body = await health(srv, N1, n1.report_token)
        assert status == 409 and "report_quiet" in body["error"]
        await age_answer_files(srv, N1)
        status, body = await health(srv, N1, n1.report_token)
        assert status == 200 and body["state"] == "joined", body
        assert await state(srv, N2) == "released"
        node = await srv.node(N1)
        assert node is not None and node.token is node.claim is None
        # the first node keeps its report token for its cluster's view (issue 16); reset ends it
        assert node.report_token is not None


@pytest.mark.parametrize("via", ["http", "tftp"])
async def test_the_issue_script_releases_nobody_and_raises_the_alarm(
    tmp_path: Path, via: str
) -> None:
    async with boot_server(tmp_path) as srv:
        n1, _ = await first_released_second_held(srv)
        assert (await n1.event("imaging", progress=12))[0] == 200  # the real sql-n1 images
        if via == "http":  # the attacker's boot script, as in the issue
            token = await boot_token(srv.url, "52-54-00-00-10-01")
        else:  # the same token over TFTP: pxelinux.cfg/01-<mac>
            data = await virtual_file(srv.boot, "pxelinux.cfg/01-52-54-00-00-10-01", "10.9.9.9")
            assert data is not None
            token = token_in(data.decode())
        for body in (
            {"state": "imaging", "progress": 99},
            {"state": "imaged"},
            {"state": "starting"},
        ):
            status, answer = await call(srv.url, "POST", f"/api/nodes/{N1}/events", token, body)
            assert status == 403, answer
        status, answer = await health(srv, N1, token)
        assert status == 403, answer
        assert await state(srv, N2) == "held"
        assert await state(srv, N1) == "imaging"
        gate = await cluster(srv)
        assert gate.gate == "stopped" and gate.formed_at is None
        assert gate.alarm.startswith(N1) and "boot token" in gate.alarm
        alarms = await srv.events("alarm", N1)
        assert alarms and all(e.detail["ip"] == "127.0.0.1" for e in alarms)
        # visible: /api/clusters, the admin API (netdeploy clusters), the dashboard
        admin = srv.ctx.admin_token
        _, clusters = await call(srv.url, "GET", "/api/clusters", admin)
        (sqlclu,) = [c for c in clusters["clusters"] if c["name"] == "sqlclu"]
        assert sqlclu["alarm"] and sqlclu["gate"] == "stopped"
        _, listed = await call(srv.url, "GET", "/api/admin/clusters", admin)
        assert next(c for c in listed["clusters"] if c["name"] == "sqlclu")["alarm"]
        async with (
            aiohttp.ClientSession() as http,
            http.get(srv.url + "/", headers={"Authorization": f"Bearer {admin}"}) as page,
        ):
            assert "Identity alarm" in await page.text()
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "netdeploy", "clusters", "--url", srv.url, f"--token={admin}",
            "--config", str(ROOT / "config" / "netdeploy.toml"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        printed = (await cli.communicate())[0].decode()
        assert cli.returncode == 0 and "ALARM" in printed and "boot token" in printed, printed
        # the real agent's next report: its claim belongs to the phase the attacker replaced
        status, answer = await n1.event("imaging", progress=20)
        assert status == 403 and "earlier boot phase" in answer["error"]
        # the admin retries sql-n1: alarm cleared, new credentials on its next boot
        status, _ = await call(srv.url, "POST", "/api/admin/nodes/sql-n1/retry", admin, {})
        assert status == 200
        assert (await cluster(srv)).alarm == ""


async def test_a_smarter_attacker_is_stopped_before_the_gate_opens(tmp_path: Path) -> None:
    """The attacker claims the node itself and fetches its answer files: it gets a report
    token, but the quiet period outlasts the real agent's next report, which raises the alarm;
    from then on the cluster is not formed, whatever the attacker sends."""
    async with boot_server(tmp_path) as srv:
        n1, _ = await first_released_second_held(srv)
        assert (await n1.event("imaging", progress=5))[0] == 200
        thief = Agent(srv, N1)
        await thief.boot_and_claim()
        await thief.image()  # imaging, sysprep.inf, imaged: sql-n1 released (first node)
        assert (await thief.event("starting"))[0] == 200
        status, body = await health(srv, N1, thief.report_token)
        assert status == 409, body  # too early (rollout.report_quiet)
        status, _ = await n1.event("imaging", progress=30)  # the real agent, 2 s later
        assert status == 403
        await age_answer_files(srv, N1)
        status, body = await health(srv, N1, thief.report_token)
        assert status == 409 and "identity alarm" in body["error"], body
        assert await state(srv, N2) == "held"
        assert (await cluster(srv)).gate == "stopped"


async def test_a_second_claim_in_one_phase_is_refused_and_stops_the_gate(tmp_path: Path) -> None:
    async with boot_server(tmp_path) as srv:
        token = await boot_token(srv.url, N1)
        first, second = secrets.token_hex(24), secrets.token_hex(24)
        assert (await claim(srv.url, N1, token, first)).status == 200
        assert (await claim(srv.url, N1, token, first)).status == 200  # a retry: the same
        refused = await claim(srv.url, N1, token, second)
        assert refused.status == 409 and "second claim" in refused.text
        assert (await cluster(srv)).gate == "stopped"
        (alarm,) = await srv.events("alarm", N1)
        assert "second claim" in alarm.detail["reason"]


async def test_the_report_token_counts_only_from_an_address_the_node_is_known_by(
    tmp_path: Path,
) -> None:
    async with boot_server(tmp_path) as srv:
        n1, _ = await first_released_second_held(srv)
        await n1.image()
        assert (await n1.event("starting"))[0] == 200
        await age_answer_files(srv, N1)
        # from elsewhere: neither the claim's address (127.0.0.1) nor vars.ip (10.88.0.11)
        stolen = actions.health(N1, n1.report_token, HealthReport(True), "10.9.9.9", "10.88.0.11")
        with pytest.raises(Forbidden, match="not known by"):
            await srv.ctx.rollout.run(stolen, [N1])
        assert (await cluster(srv)).gate == "stopped"
        # Mini-Setup gave it its configured address: that counts (but the alarm stands)
        good = actions.health(N1, n1.report_token, HealthReport(True), "10.88.0.11", "10.88.0.11")
        with pytest.raises(Exception, match="identity alarm"):
            await srv.ctx.rollout.run(good, [N1])
        assert await state(srv, N2) == "held"


async def test_credentials_from_before_reset_are_refused_everywhere(tmp_path: Path) -> None:
    async with boot_server(tmp_path) as srv:
        agent = Agent(srv, N1)
        token = await boot_token(srv.url, N1)
        assert (await claim(srv.url, N1, token, agent.secret)).status == 200
        assert (await agent.event("imaging", progress=1))[0] == 200
        await agent.sysprep()
        admin = srv.ctx.admin_token
        assert (await call(srv.url, "POST", "/api/admin/clusters/sqlclu/reset", admin, {}))[
            0
        ] == 200
        await agent.boot_and_claim.__func__(Agent(srv, N1))  # type: ignore[attr-defined]
        old = agent.secret
        refused = [
            await call(srv.url, "GET", f"/api/nodes/{N1}/plan", old),
            await call(srv.url, "POST", f"/api/nodes/{N1}/events", old, {"state": "imaging"}),
            await call(srv.url, "GET", f"/api/nodes/{N1}/gate?timeout=0", old),
            await call(srv.url, "GET", f"/nodes/{N1}/files/unattend.xml", old),
            await call(srv.url, "GET", f"/nodes/{N1}/files/report.vbs", old),
            await call(srv.url, "GET", f"/images/w2k3-ent-sp1?mac={N1}", old),
            await call(srv.url, "POST", f"/api/multicast/join?image=w2k3-ent-sp1&mac={N1}", old),
            await health(srv, N1, agent.report_token),
            await call(srv.url, "POST", f"/api/nodes/{N1}/events", agent.report_token,
                       {"state": "joined"}),
        ]  # fmt: skip
        assert [status for status, _ in refused] == [403] * len(refused), refused
        assert (await claim(srv.url, N1, token, secrets.token_hex(24))).status == 403
        node = await srv.node(N1)
        assert node is not None and node.token_rollout == 2


async def test_data_routes_need_credentials_with_the_demo_config(tmp_path: Path) -> None:
    async with boot_server(tmp_path) as srv:
        for path in (
            "/api/nodes",
            "/api/clusters",
            "/api/images",
            "/api/transfers",
            "/api/events/log",
            "/metrics",
            "/images/w2k3-ent-sp1",
            f"/nodes/{N1}/files",
        ):
            status, body = await call(srv.url, "GET", path)
            assert status == 401 and body["error"], path
            status, _ = await call(srv.url, "GET", path, srv.ctx.admin_token)
            assert status in (200, 409), path  # 409: the demo image is not added
        # public routes ignore what they are sent (a reverse proxy's Basic auth, say)
        basic = {"Authorization": "Basic dXNlcjpwYXNz"}
        async with aiohttp.ClientSession() as http:
            for path in ("/api/version", "/boot.ipxe", "/"):
                async with http.get(srv.url + path, headers=basic) as resp:
                    assert resp.status == 200, path
        await asyncio.sleep(1)  # refusals are recorded off the request path
        refusals = await srv.events("auth")
        assert len(refusals) >= 8 and all(e.detail["ip"] == "127.0.0.1" for e in refusals)


async def test_metrics_token_and_public_switch(tmp_path: Path) -> None:
    scrape = "prometheus-scrape-token-0123"
    config = tmp_path / "netdeploy.toml"
    config.write_text(DEMO.read_text() + f'\n[metrics]\ntoken = "{scrape}"\n')
    paths = {
        "templates_dir": str(ROOT / "config/templates"),
        "bootfiles_dir": str(ROOT / "bootfiles"),
    }
    async with boot_server(tmp_path, config=config, **paths) as srv:
        assert (await call(srv.url, "GET", "/metrics"))[0] == 401
        assert (await call(srv.url, "GET", "/metrics", scrape))[0] == 200
        assert (await call(srv.url, "GET", "/api/nodes", scrape))[0] == 401  # metrics only
    config.write_text(DEMO.read_text() + "\n[metrics]\npublic = true\n")
    async with boot_server(tmp_path, config=config, **paths) as srv:
        assert (await call(srv.url, "GET", "/metrics"))[0] == 200


async def test_logout_ends_the_session_and_logins_are_throttled(tmp_path: Path) -> None:
    async with boot_server(tmp_path) as srv, aiohttp.ClientSession() as http:
        form = {"token": srv.ctx.admin_token}
        async with http.post(srv.url + "/login", data=form, allow_redirects=False) as resp:
            assert resp.status == 303
            cookie = resp.cookies["nd_session"].value
        jar = {"Cookie": f"nd_session={cookie}"}
        async with http.get(srv.url + "/api/nodes", headers=jar) as resp:
            assert resp.status == 200
        async with http.get(srv.url + "/", headers=jar) as resp:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
            assert csrf
        async with http.post(
            srv.url + "/logout", data={"csrf": csrf.group(1)}, headers=jar, allow_redirects=False
        ) as resp:
            assert resp.status == 303
        async with (
            aiohttp.ClientSession() as fresh,
            fresh.get(srv.url + "/api/nodes", headers=jar) as resp,
        ):
            assert resp.status == 401  # the old cookie, replayed: dead on the server
        statuses = []
        async with aiohttp.ClientSession() as guesser:
            for i in range(8):
                async with guesser.post(srv.url + "/login", data={"token": f"guess-{i}"}) as r:
                    statuses.append(r.status)
        assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}


async def test_secrets_at_rest_and_in_the_log(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level("DEBUG")
    async with boot_server(tmp_path) as srv:
        agent = Agent(srv, N1)
        await agent.boot_and_claim()
        assert (await agent.event("imaging", progress=1))[0] == 200
        await agent.sysprep()
        state_dir = Path(srv.ctx.config.server.state_dir)
        db = tmp_path / "netdeploy.db"
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        for name in ("admin-token", "secret-key"):
            assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600
        tokens = (srv.ctx.admin_token, agent.secret, agent.report_token)
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("netdeploy.db*"))
    for value in DEMO_SECRETS + tokens:
        assert value.encode() not in stored, value
    logged = caplog.text
    for value in tokens:
        assert value not in logged, value
    assert "generated the admin token" in logged  # said, but not shown


async def test_hostile_headers_never_reach_a_batch(tmp_path: Path) -> None:
    """A non-UTF-8 byte in Authorization: 401, and the agents of the same moment unharmed."""
    async with boot_server(tmp_path) as srv:
        agent = Agent(srv, N2)
        await agent.boot_and_claim()
        host, port = "127.0.0.1", srv.ctx.ports.http

        async def raw(path: str) -> int:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
                + b"Authorization: Bearer \xff\xfe-not-utf8-\x80\r\nContent-Length: 2\r\n\r\n{}"
            )
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            writer.close()
            return status

        paths = [f"/api/nodes/{N1}/events", "/api/admin/clusters/sqlclu/reset", "/logout"]
        results = await asyncio.gather(
            *(raw(p) for p in paths * 10), *(agent.event("imaging", progress=i) for i in range(10))
        )
        statuses = results[:30]
        # refused where a credential counts; /logout is public and ignores it (303): never 5xx
        assert all(400 <= s < 500 for i, s in enumerate(statuses) if i % 3 != 2), statuses
        assert all(s == 303 for s in statuses[2::3]), statuses
        assert all(status == 200 for status, _ in results[30:])
        assert await state(srv, N2) == NodeState.IMAGING


async def test_a_power_cycled_node_parked_in_its_gate_poll_is_no_intruder(tmp_path: Path) -> None:
    """The QEMU e2e found it: a held node killed while its agent's long-poll was parked gets a
    new boot script and claims again; the old poll, answered later, must not raise an alarm."""
    async with boot_server(tmp_path) as srv:
        _, n2 = await first_released_second_held(srv)
        parked = asyncio.create_task(
            call(srv.url, "GET", f"/api/nodes/{N2}/gate?timeout=1", n2.secret)
        )
        await asyncio.sleep(0.3)
        await Agent(srv, N2).boot_and_claim()  # the power-cycled machine, in wait mode
        status, view = await parked
        assert status == 200 and view["state"] == "held"
        assert not await srv.events("alarm")
        assert (await cluster(srv)).alarm == ""
