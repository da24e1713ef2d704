"""Boot scripts over real HTTP with curl: per-MAC decisions, state changes, events."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdeploy.inventory import NodeState
from netdeploy.tokens import token_matches
from tests.integration.conftest_boot import boot_server, curl, token_in

SQL_N1 = "52:54:00:00:10:01"
NOTATIONS = [
    "52:54:00:00:10:01",
    "52-54-00-00-10-01",
    "525400001001",
    "52-54-00-00-10-01".upper(),
    "5254.0000.1001",
]


async def test_first_stage_chains_on_the_public_url(tmp_path: Path) -> None:
    async with boot_server(tmp_path, public_url="http://10.0.2.2:28080") as srv:
        got = await curl(f"{srv.url}/boot.ipxe")
        assert got.status == 200 and got.text.startswith("#!ipxe\n")
        assert "chain --autofree http://10.0.2.2:28080/boot/${netX/mac:hexhyp}.ipxe" in got.text
        assert "127.0.0.1" not in got.text  # never our bind address (RECIPES.md 5.4)
        (event,) = await srv.events("boot")
        assert event.mac is None
        assert event.detail == {
            "via": "http",
            "path": "/boot.ipxe",
            "ip": "127.0.0.1",
            "decision": "chain",
            "why": "first stage: chain to the per-MAC script",
        }


def image_boots(metrics: str) -> float:
    line = 'netdeploy_boot_requests_total{decision="image",via="http"} '
    found = [x for x in metrics.splitlines() if x.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


async def test_every_mac_notation_reaches_the_same_node(tmp_path: Path) -> None:
    async with boot_server(tmp_path) as srv:
        admin = ("-H", f"Authorization: Bearer {srv.ctx.admin_token}")  # [metrics] public = false
        before = image_boots((await curl(f"{srv.url}/metrics", *admin)).text)
        tokens = []
        for notation in NOTATIONS:
            got = await curl(f"{srv.url}/boot/{notation}.ipxe")
            assert got.status == 200, got.text
            assert f"echo netdeploy: {SQL_N1} sql-n1: image:" in got.text
            assert "BOOTIF=01-52-54-00-00-10-01" in got.text
            tokens.append(token_in(got.text))
        assert len(set(tokens)) == len(tokens)  # a fresh token per render
        after = image_boots((await curl(f"{srv.url}/metrics", *admin)).text)
        assert after - before == len(NOTATIONS)
        node = await srv.node(SQL_N1)
        assert node is not None and node.state == NodeState.PXE
        assert token_matches(tokens[-1], node.token)
        assert not token_matches(tokens[0], node.token)  # the previous one stops working
        boots = await srv.events("boot", SQL_N1)
        assert [e.detail["path"] for e in boots] == [f"/boot/{n}.ipxe" for n in NOTATIONS]
        assert all(e.detail["decision"] == "image" and e.detail["via"] == "http" for e in boots)
        (change,) = [e for e in await srv.events("state", SQL_N1) if e.from_state]
        assert (change.from_state, change.to_state) == ("registered", "pxe")


async def test_registered_node_goes_to_pxe_once(tmp_path: Path) -> None:
    async with boot_server(tmp_path) as srv:
        for _ in range(3):
            assert (await curl(f"{srv.url}/boot/{SQL_N1}.ipxe")).status == 200
        changes = [e for e in await srv.events("state", SQL_N1) if e.from_state]
        assert [(e.from_state, e.to_state) for e in changes] == [("registered", "pxe")]


async def test_unknown_mac_gets_the_discovery_plan_not_an_error(tmp_path: Path) -> None:
    async with boot_server(tmp_path) as srv:
        got = await curl(f"{srv.url}/boot/AA-BB-CC-00-11-22.ipxe")
        assert got.status == 200
        assert "nd.mode=discover" in got.text and "nd.image" not in got.text
        node = await srv.node("aa:bb:cc:00:11:22")
        assert node is not None
        assert (node.state, node.in_config, node.hostname) == ("discovered", False, None)
        assert token_matches(token_in(got.text), node.token)
        again = await curl(f"{srv.url}/boot/aabbcc001122.ipxe")
        assert "nd.mode=discover" in again.text
        (created,) = await srv.events("state", "aa:bb:cc:00:11:22")
        assert created.to_state == "discovered" and "unknown MAC" in created.detail["reason"]
        boots = await srv.events("boot", "aa:bb:cc:00:11:22")
        # an unknown MAC's repeat within [discovery] record_interval is folded (issue 15)
        assert [b.detail["decision"] for b in boots] == ["discover"]
        assert "never imaged" in boots[0].detail["why"]


async def test_a_bad_mac_is_a_precise_400(tmp_path: Path) -> None:
    async with boot_server(tmp_path) as srv:
        got = await curl(f"{srv.url}/boot/52:54:00-00:10:01.ipxe")
        assert got.status == 400 and "mixes separators" in got.text
        got = await curl(f"{srv.url}/boot/52-54-00-00-10.ipxe")
        assert got.status == 400 and "not a MAC address" in got.text


@pytest.mark.parametrize(
    ("state", "expect"),
    [
        (NodeState.IMAGING, "nd.mode=image"),
        (NodeState.IMAGED, "nd.mode=wait"),
        (NodeState.HELD, "nd.mode=wait"),
        (NodeState.FAILED, "nd.mode=wait"),
        # the agent first restores the boot code the hold replaced (issue 21)
        (NodeState.RELEASED, "nd.mode=wait"),
        (NodeState.STARTING, "sanboot --no-describe --drive 0x80"),
        (NodeState.JOINED, "sanboot --no-describe --drive 0x80"),
    ],
)
async def test_script_follows_the_node_state(tmp_path: Path, state: NodeState, expect: str) -> None:
    mac = "52:54:00:00:10:02"
    async with boot_server(tmp_path) as srv:
        await srv.force_state(mac, state)
        before = (await srv.node(mac)).token  # type: ignore[union-attr]
        got = await curl(f"{srv.url}/boot/{mac}.ipxe")
        assert got.status == 200 and expect in got.text
        node = await srv.node(mac)
        assert node is not None and node.state == state  # booting never moves these states
        if state in (NodeState.STARTING, NodeState.JOINED):
            assert "nd.token" not in got.text and node.token == before  # no agent, no new token
        else:
            assert token_matches(token_in(got.text), node.token)


async def test_held_node_that_reboots_stays_held(tmp_path: Path) -> None:
    mac = "52:54:00:00:10:03"
    async with boot_server(tmp_path) as srv:
        await srv.force_state(mac, NodeState.HELD)
        for _ in range(2):
            got = await curl(f"{srv.url}/boot/{mac}.ipxe")
            assert "nd.mode=wait" in got.text and "sanboot" not in got.text
        assert (await srv.node(mac)).state == "held"  # type: ignore[union-attr]
