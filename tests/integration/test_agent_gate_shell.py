"""The agent at the gate, run by busybox sh on the host against a real server on loopback
(issue 16): every state the gate can answer has its action. ``failed`` stops it with the
server's reason (the disk untouched); a ``retry`` while it waits re-images at once (the agent
reboots the machine itself: no power cycle); ``released`` sends it to the disk."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.integration.agent_shell import BUSYBOX, agent_functions, busybox_bin
from tests.integration.conftest_boot import agent_credential
from tests.integration.rollout_support import (
    ADMIN,
    Agent,
    in_process_server,
    lab_config,
    mac_of,
    prepare_nodes,
)

APPLETS = ["cat", "sed", "sleep", "timeout", "wget"]

pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox (Debian: busybox-static)")


def bin_dir(tmp: Path) -> Path:
    return busybox_bin(tmp / "bin", APPLETS)


async def start_agent(tmp: Path, url: str, mac: str, token: str) -> asyncio.subprocess.Process:
    """``wait_at_gate`` as the agent runs it; ``reboot`` is the one thing stubbed (it prints
    and ends the agent with 42), and the agent's own scratch files live in ``tmp``."""
    functions = agent_functions(
        "wait_at_gate", "gate_field", "gate_step", "reimage_now", "token_dead", "outage", tmp=tmp
    )
    script = f"""
log() {{ echo "[agent] $*"; }}
reboot() {{ echo "[reboot] $*"; exit 42; }}
MAC={mac}; API="{url}/api/nodes/{mac}"; AUTH="Authorization: Bearer {token}"
{functions}
wait_at_gate && echo "[agent] boot the local disk"
"""
    return await asyncio.create_subprocess_exec(
        BUSYBOX,  # type: ignore[arg-type]
        "sh",
        "-c",
        script,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"PATH": str(bin_dir(tmp))},
        start_new_session=True,  # its wget children go with it (stop())
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    """End the agent and its long-poll wget (only this test's own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


async def read_until(proc: asyncio.subprocess.Process, text: str, timeout: float = 10) -> str:
    seen = ""
    assert proc.stdout is not None
    async with asyncio.timeout(timeout):
        while text not in seen:
            line = await proc.stdout.readline()
            assert line, f"the agent ended before {text!r}:\n{seen}"
            seen += line.decode()
    return seen


async def admin(http: aiohttp.ClientSession, url: str, path: str, body: dict) -> dict:
    async with http.post(f"{url}/api/admin/{path}", json=body, headers=ADMIN) as resp:
        data = await resp.json()
        assert resp.status == 200, data
        return data


async def test_failed_stops_with_the_reason_and_retry_reimages_at_once(tmp_path: Path) -> None:
    config = lab_config(tmp_path / "lab", 2)
    tokens = await prepare_nodes(config)
    async with in_process_server(config) as srv, aiohttp.ClientSession() as http:
        n1, n2 = (Agent(http, srv.url, mac_of(i), tokens[mac_of(i)]) for i in (1, 2))
        await asyncio.gather(n1.image(), n2.image())  # n2 held
        proc = await start_agent(tmp_path, srv.url, mac_of(2), tokens[mac_of(2)])
        try:
            await read_until(proc, "waiting at the gate")
            await asyncio.sleep(0.3)  # parked on the long-poll
            await admin(http, srv.url, "nodes/n2/fail", {"reason": "disk 2 SMART errors"})
            out = await read_until(proc, "FAILED")
            assert "FAILED (the server says): failed by " in out and "disk 2 SMART errors" in out
            # its claim ended with the failure (issue 22): it reboots for new credentials, and
            # the machine's next PXE boot is the wait agent again, which says why and waits
            await read_until(proc, "[reboot] -f")
        finally:
            await stop(proc)
        (tmp_path / "again").mkdir()
        secret = await agent_credential(srv.url, mac_of(2))
        proc = await start_agent(tmp_path / "again", srv.url, mac_of(2), secret)
        try:
            out = await read_until(proc, "FAILED")
            assert "disk 2 SMART errors" in out
            await asyncio.sleep(0.3)  # parked on the long-poll
            assert proc.returncode is None  # stopped, not gone: it waits for the admin

            started = time.monotonic()
            await admin(http, srv.url, "nodes/n2/retry", {})
            out = await read_until(proc, "[reboot] -f")
            assert "re-imaging now" in out or "rebooting for new ones" in out
            assert time.monotonic() - started < 5  # woken by the retry, not by a timeout
            assert await asyncio.wait_for(proc.wait(), 5) == 42
        finally:
            await stop(proc)
        # the reboot's PXE boot gets the imaging agent: re-imaged without a power cycle
        async with http.get(f"{srv.url}/boot/{mac_of(2)}.ipxe") as resp:
            assert "nd.mode=image" in await resp.text()


async def test_released_boots_the_disk_and_a_failed_node_says_why_at_once(tmp_path: Path) -> None:
    config = lab_config(tmp_path / "lab", 3)
    tokens = await prepare_nodes(config)
    async with in_process_server(config) as srv, aiohttp.ClientSession() as http:
        n1, n2, n3 = (Agent(http, srv.url, mac_of(i), tokens[mac_of(i)]) for i in (1, 2, 3))
        await asyncio.gather(n1.image(), n2.image(), n3.image())
        # n3 failed before its agent came up (a power cycle into wait mode): told at once
        await admin(http, srv.url, "nodes/n3/fail", {"reason": "wrong disk size"})
        (tmp_path / "n3").mkdir()
        # a power cycle: a new boot script (wait mode) and a claim of its own
        failed_secret = await agent_credential(srv.url, mac_of(3))
        failed = await start_agent(tmp_path / "n3", srv.url, mac_of(3), failed_secret)
        (tmp_path / "n2").mkdir()
        held = await start_agent(tmp_path / "n2", srv.url, mac_of(2), tokens[mac_of(2)])
        try:
            assert "wrong disk size" in await read_until(failed, "FAILED", timeout=5)
            await read_until(held, "waiting at the gate")
            await n1.event("starting")
            assert (await n1.health())[0] == 200  # formed: sequential releases n2
            out = await read_until(held, "boot the local disk")
            assert "released (released): rebooting into the local disk" in out
            assert await asyncio.wait_for(held.wait(), 5) == 0
        finally:
            for proc in (failed, held):
                await stop(proc)
