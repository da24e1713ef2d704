"""On SQLite the CLI writes to the store beside a running server: its events reach the
server's live stream (netdeploy/fanout.py, StorePoller), once each."""

from __future__ import annotations

import asyncio
import json
import os

from aiohttp import ClientSession, ClientTimeout

from tests.conftest import add_image, start_server


async def data_frames(resp, wanted=None, timeout: float = 30) -> list[dict]:  # type: ignore[no-untyped-def]
    """SSE ``data:`` payloads until ``wanted(payload)`` holds for one (an error after
    ``timeout``), or, without ``wanted``, all that come within ``timeout`` seconds."""
    seen: list[dict] = []

    async def read() -> None:
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if wanted and wanted(seen[-1]):
                    return

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        if wanted:
            raise AssertionError(f"not seen within {timeout} s; saw {seen}") from None
    return seen


async def test_an_image_added_from_the_cli_shows_on_the_running_servers_stream(state_dir, tmp_path):
    server = start_server(state_dir)
    try:
        admin = (state_dir / "admin-token").read_text().strip()
        master = tmp_path / "master.img"
        master.write_bytes(os.urandom(1 << 20))
        headers = {"Authorization": f"Bearer {admin}"}
        async with (
            ClientSession(timeout=ClientTimeout(total=60)) as client,
            client.get(server.url + "/api/events", headers=headers) as resp,
        ):
            assert resp.status == 200
            await asyncio.to_thread(add_image, state_dir, master)  # another process writes

            def is_added(ev: dict) -> bool:
                return ev.get("kind") == "image" and ev["detail"].get("image") == "w2k3-ent-sp1"

            frames = await data_frames(resp, is_added)
            added = [ev for ev in frames if is_added(ev)]
            assert len(added) == 1 and added[0]["id"] is not None
            # the next polls (every 2 s) do not publish the same row again
            later = await data_frames(resp, timeout=4.5)
            assert [ev for ev in later if ev.get("id") == added[0]["id"]] == []
        async with (
            ClientSession() as client,
            client.get(server.url + "/api/events/log?kind=image", headers=headers) as log,
        ):
            rows = (await log.json())["events"]
        assert [ev["id"] for ev in rows] == [added[0]["id"]]
    finally:
        server.stop()
