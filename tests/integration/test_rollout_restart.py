"""Crash safety and the admin CLI against a real `python -m netdeploy serve` subprocess."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
from sqlalchemy import select

from netdeploy.config import load_config
from netdeploy.store import open_store
from netdeploy.store.models import Node
from tests.integration.rollout_support import (
    REPO,
    Agent,
    lab_config,
    mac_of,
    prepare_nodes,
    start_server_process,
)
from tests.integration.rollout_support import (
    releases as release_counts,
)


async def _retrying(call, *args, deadline: float = 60.0):
    """What a real agent does: the server may be gone for a moment; ask again."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        try:
            return await call(*args)
        except (TimeoutError, aiohttp.ClientConnectionError):
            if loop.time() > end:
                raise
            await asyncio.sleep(0.1)


async def _store_view(config: Path) -> tuple[dict[str, str], dict[str, int]]:
    """Node states and per-node release counts, read straight from the store."""
    engine, sessions = await open_store(load_config(config).database_url)
    try:
        async with sessions() as session:
            states = {n.hostname: n.state for n in await session.scalars(select(Node))}
            releases = dict(await release_counts(session))
    finally:
        await engine.dispose()
    return states, releases


async def test_kill_9_in_the_middle_of_a_64_node_rollout_loses_nothing(tmp_path: Path) -> None:
    config = lab_config(tmp_path, 64, release="waves:8", gate_poll_timeout=30)
    tokens = await prepare_nodes(config)
    log = tmp_path / "serve.log"
    server = start_server_process(config, log=log)
    go = asyncio.Event()  # released nodes start only after the restart
    try:
        async with aiohttp.ClientSession() as http:
            agents = [Agent(http, server.url, mac_of(i), tokens[mac_of(i)]) for i in range(1, 65)]

            async def follower(agent: Agent) -> None:
                await _retrying(agent.image, 2)
                view = {"released": False}
                while not view["released"]:
                    status, view = await _retrying(agent.gate, 5)
                    if status == 503:  # the server said it is stopping
                        view = {"released": False}
                await go.wait()
                for state in ("starting", "joined"):
                    status, body = await _retrying(agent.event, state)
                    assert status == 200, body

            async def first(agent: Agent) -> None:
                await _retrying(agent.image, 2)
                await _retrying(agent.event, "starting")
                assert (await _retrying(agent.health))[0] == 200

            tasks = [asyncio.create_task(follower(a)) for a in agents[1:]]
            await first(agents[0])
            for _ in range(300):  # wait for the first wave to be out
                states, _ = await _store_view(config)
                if list(states.values()).count("released") == 8:
                    break
                await asyncio.sleep(0.1)
            server.kill()  # SIGKILL: no goodbye, long-polls cut mid-air
            states, releases = await _store_view(config)
            counts = {s: list(states.values()).count(s) for s in set(states.values())}
            assert counts == {"joined": 1, "released": 8, "held": 55}, counts

            server = start_server_process(config, port=server.port, log=log)
            await asyncio.sleep(0.5)  # long-polls resume against the new process
            states_after, releases_after = await _store_view(config)
            assert states_after == states and releases_after == releases  # still held
            go.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 90)

        states, releases = await _store_view(config)
        assert set(states.values()) == {"joined"}
        assert len(releases) == 64 and set(releases.values()) == {1}  # never twice
    finally:
        server.kill()


def netdeploy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "netdeploy", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_admin_cli_talks_to_the_running_server(tmp_path: Path) -> None:
    config = lab_config(tmp_path, 3, release="manual")
    tokens = await prepare_nodes(config)
    cfg = ["--config", str(config)]
    # nobody listening yet: one clear line, exit 1
    down = netdeploy("clusters", *cfg, "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "is `netdeploy serve` running?" in down.stderr
    server = start_server_process(config, log=tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession() as http:
            agents = [Agent(http, server.url, mac_of(i), tokens[mac_of(i)]) for i in (1, 2, 3)]
            for agent in agents:
                await agent.image()
            early = netdeploy("release", "n2", *cfg)  # URL from state_dir/admin-url
            assert early.returncode == 1 and "unprotected" in early.stderr, early.stderr
            await agents[0].health()
            done = netdeploy("release", "n2", *cfg)
            assert done.returncode == 0 and "now released" in done.stdout, done.stderr
            _, view = await agents[1].gate(timeout=0)
            assert view["released"]
            again = netdeploy("release", mac_of(2), *cfg)
            assert again.returncode == 1 and "never released twice" in again.stderr
            listed = netdeploy("clusters", *cfg, "--json")
            assert listed.returncode == 0, listed.stderr
            cluster = json.loads(listed.stdout)["clusters"][0]
            assert [n["state"] for n in cluster["nodes"]] == ["joined", "released", "held"]
            table = netdeploy("clusters", *cfg)
            assert "gate formed" in table.stdout or "gate releasing" in table.stdout
            wrong = netdeploy("fail", "n3", *cfg, "--token", "nope")
            assert wrong.returncode == 1 and "wrong admin token" in wrong.stderr
            assert netdeploy("fail", "n3", *cfg, "--reason", "PSU").returncode == 0
            assert netdeploy("retry", "n3", *cfg).returncode == 0
            refused = netdeploy("reset", "clu", *cfg)
            assert refused.returncode == 1 and "--yes" in refused.stderr
            reset = netdeploy("reset", "clu", *cfg, "--yes")
            assert reset.returncode == 0 and "rollout 2" in reset.stdout, reset.stderr
    finally:
        server.kill()
