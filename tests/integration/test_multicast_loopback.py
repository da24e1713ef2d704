"""Multicast over loopback: a real server, several `netdeploy receive` processes."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from sqlalchemy import select

from netdeploy.multicast.service import MulticastService
from netdeploy.store.models import Event, Node
from tests.conftest import sha256_of
from tests.integration.mc_harness import run_receiver, running_server, wait_for


async def test_three_receivers_get_verified_copies(tmp_path):
    async with running_server(tmp_path, min_receivers=3, max_wait=0.3) as server:
        outs = [tmp_path / f"copy{i}.img" for i in range(3)]
        results = await asyncio.gather(
            *(run_receiver(server.url, out, "--name", f"r{i}") for i, out in enumerate(outs))
        )
        for (status, output), out in zip(results, outs, strict=True):
            assert status == 0, output
            assert sha256_of(out) == server.sha256
            summary = json.loads(output.strip().splitlines()[-1])
            assert summary["unicast_bytes"] == 0, summary
        await wait_for(lambda: server.service.finished)
        [session] = server.service.finished
        assert session["state"] == "finished"
        assert sorted(r["state"] for r in session["receivers"]) == ["done"] * 3
        # what happened is recorded as events and counted in /metrics
        async with server.ctx.sessions() as db:
            rows = (await db.scalars(select(Event).where(Event.kind == "multicast"))).all()
        whats = sorted(e.detail["what"] for e in rows)
        assert whats == sorted(["session_started", "session_finished"] + ["receiver_done"] * 3)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{server.url}/metrics", headers=server.admin) as r,  # [metrics] public
        ):
            metrics = await r.text()
        assert 'netdeploy_multicast_sessions_total{result="finished"}' in metrics
        assert 'netdeploy_multicast_receivers_total{state="done"}' in metrics


async def test_cluster_session_starts_when_every_expected_node_joined(tmp_path):
    """sqlclu has 3 nodes: their session starts at the third join, not after max_wait."""
    macs = ["52:54:00:00:10:01", "52:54:00:00:10:02", "52:54:00:00:10:03"]
    async with running_server(tmp_path, min_receivers=5, max_wait=600) as server:
        outs = [tmp_path / f"n{i}.img" for i in range(3)]
        results = await asyncio.gather(
            *(run_receiver(server.url, o, "--mac", m) for o, m in zip(outs, macs, strict=True))
        )
        for (status, output), out in zip(results, outs, strict=True):
            assert status == 0, output
            assert sha256_of(out) == server.sha256
        await wait_for(lambda: server.service.finished)
        [session] = server.service.finished
        assert (session["cluster"], session["expected"]) == ("sqlclu", 3)
        assert sorted(r["mac"] for r in session["receivers"]) == macs


async def test_a_node_that_is_already_imaged_is_not_waited_for(tmp_path):
    """sql-n2 is held (imaged earlier): the session of n1 and n3 starts at their two joins."""
    macs = ["52:54:00:00:10:01", "52:54:00:00:10:03"]
    async with running_server(tmp_path, min_receivers=5, max_wait=600) as server:
        async with server.ctx.sessions() as db:
            held = await db.get(Node, "52:54:00:00:10:02")
            held.state = "held"
            await db.commit()
        outs = [tmp_path / f"n{i}.img" for i in range(2)]
        results = await asyncio.gather(
            *(run_receiver(server.url, o, "--mac", m) for o, m in zip(outs, macs, strict=True))
        )
        for (status, output), out in zip(results, outs, strict=True):
            assert status == 0, output
            assert sha256_of(out) == server.sha256
        await wait_for(lambda: server.service.finished)
        [session] = server.service.finished
        assert session["expected"] == 2
        assert sorted(r["mac"] for r in session["receivers"]) == macs


async def test_a_session_is_listed_finished_only_once_its_events_are_stored(tmp_path, monkeypatch):
    """Whoever sees a session finished (the status API, a test) finds its events in the log:
    the event store is slowed down here, as a loaded host slows it."""
    store = MulticastService._store

    async def slow_store(self, event):
        await asyncio.sleep(0.5)
        await store(self, event)

    monkeypatch.setattr(MulticastService, "_store", slow_store)
    async with running_server(tmp_path, min_receivers=1, max_wait=0.3) as server:
        status, output = await run_receiver(server.url, tmp_path / "copy.img")
        assert status == 0, output
        await wait_for(lambda: server.service.finished)
        async with server.ctx.sessions() as db:
            rows = (await db.scalars(select(Event).where(Event.kind == "multicast"))).all()
        assert "session_finished" in {e.detail["what"] for e in rows}
