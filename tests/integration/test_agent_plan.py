"""`GET /api/nodes/{mac}/plan`: what the imaging agent is told, over real HTTP with curl."""

from __future__ import annotations

import asyncio
import json
import secrets
import shlex

from tests.integration.conftest_boot import agent_credential, curl
from tests.integration.mc_harness import IMAGE, running_server

SQL_N1, WEB_1 = "52:54:00:00:10:01", "52:54:00:00:20:01"


async def shell_plan(url: str, mac: str, token: str) -> dict[str, str]:
    """What the busybox agent gets by sourcing the ?format=sh answer: KEY='value' lines."""
    got = await curl(
        f"{url}/api/nodes/{mac}/plan?format=sh", "-H", f"Authorization: Bearer {token}"
    )
    assert got.status == 200, got.text
    lines = (line.partition("=") for line in got.text.splitlines())
    return {key: "".join(shlex.split(value)) for key, _, value in lines}


async def test_a_multicast_cluster_node_is_told_where_to_join(tmp_path):
    async with running_server(tmp_path) as server:
        token = await agent_credential(server.url, SQL_N1)
        auth = f"Authorization: Bearer {token}"
        plan = await shell_plan(server.url, SQL_N1, token)
        assert plan["ND_MODE"] == "image" and plan["ND_IMAGE"] == IMAGE
        join = plan["ND_MULTICAST"]
        assert join == (
            f"{server.url}/api/multicast/join?image={IMAGE}&mac=52%3A54%3A00%3A00%3A10%3A01"
            "&format=args"
        )
        # what the agent does with it: the answer is ndmc-recv's command line
        got = await curl(join, "-X", "POST", "-H", auth)
        assert got.status == 200, got.text
        words = got.text.split()
        assert words[0] == "--session"
        assert words[words.index("--sha256") + 1] == server.sha256
        assert words[words.index("--size") + 1] == str(server.image_path.stat().st_size)
        # the join checks the token too: nobody takes another node's place
        got = await curl(join, "-X", "POST", "-H", "Authorization: Bearer not-the-token")
        assert got.status == 401


async def test_standalone_nodes_and_disabled_multicast_stream_over_http(tmp_path):
    async with running_server(tmp_path) as server:
        token = await agent_credential(server.url, WEB_1)
        assert (await shell_plan(server.url, WEB_1, token))["ND_MULTICAST"] == ""

        server.disable_multicast()
        token = await agent_credential(server.url, SQL_N1)
        assert (await shell_plan(server.url, SQL_N1, token))["ND_MULTICAST"] == ""
        got = await curl(
            f"{server.url}/api/nodes/{SQL_N1}/plan", "-H", f"Authorization: Bearer {token}"
        )
        assert json.loads(got.body)["distribution"] == {
            "mode": "unicast",
            "why": 'distribution = "multicast" but [multicast] enabled = false: streaming over '
            "HTTP; set [multicast] enabled = true to image by multicast",
        }


async def test_a_wrong_token_is_refused_with_403_and_recorded(tmp_path):
    from tests.integration.conftest_boot import boot_server

    async with boot_server(tmp_path) as srv:
        await agent_credential(srv.url, SQL_N1)  # the real agent claimed the node
        wrong = secrets.token_hex(24)  # well-formed, but nobody's claim
        got = await curl(
            f"{srv.url}/api/nodes/{SQL_N1}/plan", "-H", f"Authorization: Bearer {wrong}"
        )
        assert got.status == 403, got.text  # was a 500: a second begin() on the read's session
        assert "claim" in json.loads(got.body)["error"]
        await asyncio.sleep(1.5)  # refusals are recorded off the request path, in batches
        auth = [e for e in await srv.events("auth", SQL_N1) if "plan" in e.detail.get("route", "")]
        assert auth and auth[0].detail["ip"] == "127.0.0.1"  # recorded, with the requester
