"""Issue 16 at the API: health means the cluster's own view. An unhealthy report stops the gate
at once with its reason; a healthy one resumes it; ``complete`` needs the member list the
cluster itself printed to hold exactly the configured nodes. Real app, real aiohttp clients.

Credentials (issue 22): the agents speak with the credentials ``prepare_nodes`` seeds (the
claim of their phase, and the report token of their answer files, claimed from 127.0.0.1);
reads of /api/clusters and /api/nodes carry the admin token; the config counts reports at
once (``[rollout] report_quiet = 0``)."""

from __future__ import annotations

import asyncio
import html
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp

from netdeploy.rollout import service
from netdeploy.store.models import utcnow
from tests.integration.rollout_support import (
    ADMIN,
    ADMIN_TOKEN,
    Agent,
    in_process_server,
    mac_of,
    prepare_nodes,
)
from tests.integration.rollout_support import lab_config as base_config


def lab_config(state_dir: Path, nodes: int, **options: Any) -> Path:
    """rollout_support's lab, with health and joined reports counted at once."""
    path = base_config(state_dir, nodes, **options)
    text = path.read_text()
    assert "[rollout]\n" in text
    path.write_text(text.replace("[rollout]\n", "[rollout]\nreport_quiet = 0\n", 1))
    return path


def crm_mon(online: list[str], offline: list[str] = ()) -> dict[str, str]:  # type: ignore[assignment]
    """A health/joined body part: crm_mon -1 output as a Pacemaker 2 node prints it."""
    text = "Cluster Summary:\n  * Stack: corosync\nNode List:\n"
    text += f"  * Online: [ {' '.join(online)} ]\n"
    if offline:
        text += f"  * OFFLINE: [ {' '.join(offline)} ]\n"
    return {"source": "crm_mon", "output": text}


async def cluster_status(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(f"{url}/api/clusters", headers=ADMIN) as resp:
        assert resp.status == 200
        return (await resp.json())["clusters"][0]


async def node_status(http: aiohttp.ClientSession, url: str, host: str) -> dict:
    async with http.get(f"{url}/api/nodes", headers=ADMIN) as resp:
        return next(n for n in (await resp.json())["nodes"] if n["hostname"] == host)


async def joined(agent: Agent, members: list[str]) -> dict:
    async with agent.http.post(
        f"{agent.url}/api/nodes/{agent.mac}/events",
        json={"state": "joined", **crm_mon(members)},
        headers=agent.headers,
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body


async def test_unhealthy_report_stops_the_gate_at_once_and_healthy_resumes_it(
    tmp_path: Path,
) -> None:
    config = lab_config(tmp_path, 3, kind="pacemaker")
    tokens = await prepare_nodes(config)
    async with in_process_server(config) as srv, aiohttp.ClientSession() as http:
        n1, n2, n3 = (Agent(http, srv.url, mac_of(i), tokens[mac_of(i)]) for i in (1, 2, 3))
        await asyncio.gather(n1.image(), n2.image(), n3.image())
        await n1.event("starting")
        status, body = await n1.health(True, **crm_mon(["n1"]))
        assert status == 200 and body["gate"] == "releasing" and body["state"] == "joined"
        assert (await n2.gate(timeout=5))[1]["released"]
        await n2.event("starting")
        poll = asyncio.create_task(n3.gate(timeout=20))  # n3 parks on the gate

        started = time.monotonic()
        status, body = await n1.health(False, message="quorum lost: 1 of 3 votes")
        cluster = await cluster_status(http, srv.url)
        elapsed = time.monotonic() - started
        assert status == 200 and body["state"] == "unhealthy" and body["changed"], body
        assert elapsed < 1.0, elapsed
        assert cluster["gate"] == "stopped"
        assert (
            "n1 reports its cluster unhealthy: quorum lost: 1 of 3 votes" in cluster["gate_detail"]
        )
        first = await node_status(http, srv.url, "n1")
        assert first["state"] == "unhealthy" and first["message"] == "quorum lost: 1 of 3 votes"

        # n2 joins meanwhile: sequential would release n3 now, but the gate is stopped
        await joined(n2, ["n1", "n2"])
        await asyncio.sleep(0.3)
        assert not poll.done()
        assert (await cluster_status(http, srv.url))["gate"] == "stopped"

        # the cluster recovers: a healthy report resumes the gate, n3 is released at once
        status, body = await n1.health(True, **crm_mon(["n1", "n2"]))
        assert status == 200 and body["state"] == "joined" and body["gate"] == "releasing"
        status, view = await poll
        assert view["released"] and view["hostname"] == "n3"


async def test_complete_only_when_the_cluster_lists_exactly_the_configured_nodes(
    tmp_path: Path,
) -> None:
    config = lab_config(tmp_path, 3, kind="pacemaker", release="waves:2")
    tokens = await prepare_nodes(config)
    async with in_process_server(config) as srv, aiohttp.ClientSession() as http:
        n1, n2, n3 = (Agent(http, srv.url, mac_of(i), tokens[mac_of(i)]) for i in (1, 2, 3))
        await asyncio.gather(n1.image(), n2.image(), n3.image())
        await n1.event("starting")
        assert (await n1.health(True, **crm_mon(["n1"])))[0] == 200
        for agent in (n2, n3):
            assert (await agent.gate(timeout=5))[1]["released"]
            await agent.event("starting")
        await joined(n2, ["n1", "n2"])
        # n3 says joined, but the cluster it reports from does not list it
        body = await joined(n3, ["n1", "n2"])
        assert body["state"] == "joined" and body["gate"] == "releasing"
        cluster = await cluster_status(http, srv.url)
        assert cluster["gate"] == "releasing"
        assert "3 of 3 nodes say joined" in cluster["gate_detail"]
        assert "the cluster does not list n3 as up" in cluster["gate_detail"]
        seen = cluster["membership"]
        assert seen["verified"] and seen["reported_by"] == "n3"
        assert seen["nodes"] == {
            "n1": "up",
            "n2": "up",
            "n3": "joined, but not in the cluster's list",
        }
        # the same, as the dashboard and `netdeploy clusters` show it
        async with http.get(f"{srv.url}/", headers=ADMIN) as resp:
            page = html.unescape(await resp.text())
        assert "the cluster lists: n1 Online, n2 Online (reported by n3)" in page
        assert "in cluster: joined, but not in the cluster's list" in page
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "netdeploy", "clusters", "--config", str(config),
            "--url", srv.url, "--token", ADMIN_TOKEN,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        out, err = await cli.communicate()
        table = out.decode()
        assert cli.returncode == 0, err.decode()
        assert "the cluster lists: n1 Online, n2 Online (reported by n3)" in table
        assert "in cluster" in table and "joined, but not in the cluster's list" in table

        # a node the config does not know in the cluster's list: not complete either
        status, body = await n1.health(True, **crm_mon(["n1", "n2", "n3", "n9"]))
        assert status == 200, body
        cluster = await cluster_status(http, srv.url)
        assert (
            cluster["gate"] == "releasing" and "lists n9, not configured" in cluster["gate_detail"]
        )
        assert [m["configured"] for m in cluster["membership"]["members"]] == [True] * 3 + [False]

        # a node listed but offline is shown with the cluster's own word
        status, body = await n1.health(True, **crm_mon(["n1", "n2"], ["n3"]))
        assert status == 200, body
        cluster = await cluster_status(http, srv.url)
        assert cluster["membership"]["nodes"]["n3"] == "joined, but the cluster says OFFLINE"
        assert cluster["gate"] == "releasing"

        status, body = await n1.health(True, **crm_mon(["n1", "n2", "n3"]))
        assert status == 200 and body["gate"] == "complete"
        cluster = await cluster_status(http, srv.url)
        assert (
            cluster["gate"] == "complete"
            and "the cluster lists every one up" in cluster["gate_detail"]
        )


async def test_healthy_claim_without_the_first_node_in_its_own_list_is_unhealthy(
    tmp_path: Path,
) -> None:
    config = lab_config(tmp_path, 2, kind="pacemaker")
    tokens = await prepare_nodes(config)
    async with in_process_server(config) as srv, aiohttp.ClientSession() as http:
        n1, n2 = (Agent(http, srv.url, mac_of(i), tokens[mac_of(i)]) for i in (1, 2))
        await asyncio.gather(n1.image(), n2.image())
        status, body = await n1.health(True, **crm_mon([], ["n1"]))
        assert status == 200 and body["state"] == "unhealthy"
        cluster = await cluster_status(http, srv.url)
        assert cluster["gate"] == "stopped" and "lists it OFFLINE" in cluster["gate_detail"]
        assert not (await n2.gate(timeout=0))[1]["released"]
        # garbage instead of a member list is refused, and changes nothing
        status, body = await n1.health(True, source="crm_mon", output="Error: not running")
        assert status == 400 and "cluster member list" in body["error"]
        # the admin retries the unhealthy first node: re-imaged on its next PXE boot
        async with http.post(f"{srv.url}/api/admin/nodes/n1/retry", headers=ADMIN) as resp:
            assert resp.status == 200 and (await resp.json())["state"] == "registered"
        # it starts alone again: the gate waits for it to form the cluster anew
        cluster = await cluster_status(http, srv.url)
        assert cluster["gate"] == "waiting" and cluster["membership"]["reported_by"] is None


async def test_a_first_node_that_timed_out_is_taken_back_by_a_late_healthy_report(
    tmp_path: Path,
) -> None:
    config = lab_config(tmp_path, 2)
    tokens = await prepare_nodes(config)
    async with in_process_server(config) as srv, aiohttp.ClientSession() as http:
        n1, n2 = (Agent(http, srv.url, mac_of(i), tokens[mac_of(i)]) for i in (1, 2))
        await asyncio.gather(n1.image(), n2.image())
        await n1.event("starting")
        # Windows took longer than the joining timeout (1,800 s) to come up
        assert await service.sweep(srv.ctx, utcnow() + timedelta(hours=1)) == [mac_of(1)]
        assert (await node_status(http, srv.url, "n1"))["message"].startswith("joining timed out")
        assert (await cluster_status(http, srv.url))["gate"] == "stopped"
        status, body = await n1.health(True)
        assert status == 200 and body["state"] == "joined", body
        assert (await n2.gate(timeout=5))[1]["released"]


async def test_retrying_an_unhealthy_first_node_makes_it_form_the_cluster_again(
    tmp_path: Path,
) -> None:
    config = lab_config(tmp_path, 3, kind="pacemaker")
    tokens = await prepare_nodes(config)
    async with in_process_server(config) as srv, aiohttp.ClientSession() as http:
        n1, n2, n3 = (Agent(http, srv.url, mac_of(i), tokens[mac_of(i)]) for i in (1, 2, 3))
        await asyncio.gather(n1.image(), n2.image(), n3.image())
        assert (await n1.health(True, **crm_mon(["n1"])))[0] == 200  # formed; n2 released
        status, body = await n1.health(False, message="disk Q: offline")
        assert status == 200 and body["state"] == "unhealthy", body
        async with http.post(f"{srv.url}/api/admin/nodes/n1/retry", headers=ADMIN) as resp:
            assert resp.status == 200
        await n2.event("starting")
        await joined(n2, ["n2"])  # would release n3 if the cluster still counted as formed
        cluster = await cluster_status(http, srv.url)
        assert cluster["gate"] == "waiting" and cluster["formed_at"] is None
        assert not (await n3.gate(timeout=0))[1]["released"]
