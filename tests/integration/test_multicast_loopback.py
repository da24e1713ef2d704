"""Multicast over loopback: a real server, several `netdeploy receive` processes."""

from __future__ import annotations

import asyncio
import json

from tests.integration.mc_harness import run_receiver, running_server, sha256_of


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
        [session] = server.service.finished
        assert session["state"] == "finished"
        assert sorted(r["state"] for r in session["receivers"]) == ["done"] * 3
