"""Admission under load: more agents than image slots, plus clients that stop reading.

The agent's own shell functions (``stream_http``, ``image_queue_wait``, ``verify_disk`` from
bootfiles/agent/init) run under the host's busybox against a real server on loopback whose
``max_image_streams`` is 2. Two stalled connections take both slots first; every agent must
still write and verify its image (none failed), after waiting in line and being told its place.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from netdeploy.store.models import Event
from tests.integration.agent_shell import (
    BUSYBOX,
    STANDINS,
    agent_functions,
    any_block_device,
    busybox_bin,
    run_script,
)
from tests.integration.conftest_images import make_image, start_lab
from tests.integration.test_images_http import StalledClient

AGENTS = 6
APPLETS = ["awk", "cat", "cut", "dd", "grep", "head", "kill", "od", "sed", "sha256sum", "sleep",
           "tail", "tr", "wget"]  # fmt: skip
NODES = "".join(
    f'\n[[nodes]]\nmac = "52:54:00:bb:00:{i:02x}"\nhostname = "q{i}"\nimage = "base"\n'
    for i in range(1, AGENTS + 1)
)
HTTP = """image_queue_wait = 0.5
stall_timeout = 1.5
max_streams_per_address = 8"""

pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox (Debian: busybox-static)")


def agent_script(
    url: str, mac: str, sha: str, size: int, disk: Path, tmp: Path, auth: str = ""
) -> str:
    names = ("ordinal", "image_queue_wait", "watch", "is_zstd", "not_zstd", "stream_http",
             "disk_target", "verify_disk")  # fmt: skip
    return f"""{STANDINS}
DEV={any_block_device()}; ND_DISK={disk}; ND_IMAGE_SIZE={size}; ND_IMAGE_SHA256={sha}
ND_IMAGE_URL="{url}/images/base?mac={mac}"
AUTH="{auth}"
{agent_functions(*names, tmp=tmp)}
disk_target && stream_http && verify_disk && echo "VERIFIED $SUM"
"""


async def test_more_agents_than_slots_all_verify_and_stalled_clients_lose_their_slots(
    tmp_path: Path,
) -> None:
    assert BUSYBOX is not None
    bin_dir = busybox_bin(tmp_path / "bin", APPLETS)
    lab = await start_lab(tmp_path / "lab", max_streams=2, http_extra=HTTP, extra=NODES)
    stalled: list[StalledClient] = []
    try:
        src = lab.root / "base.img"
        sha = make_image(src, 16 * 1024 * 1024)  # more than socket buffers: readers must read
        await lab.add("base", src)
        stalled = [await StalledClient.get(lab, "/images/base") for _ in range(2)]
        assert all(b"200 OK" in s.head for s in stalled)
        scripts = []
        for i in range(1, AGENTS + 1):
            disk, tmp = tmp_path / f"disk{i}", tmp_path / f"tmp{i}"
            tmp.mkdir()
            disk.write_bytes(b"")
            mac = f"52:54:00:bb:00:{i:02x}"
            # the admin token stands in for each agent's claim: these MACs image no real node
            admin = f"Authorization: Bearer {lab.ctx.admin_token}"
            scripts.append(
                agent_script(lab.url, mac, sha, src.stat().st_size, disk, tmp, auth=admin)
            )
        outputs = await asyncio.gather(*(run_script(bin_dir, s, timeout=120) for s in scripts))
        for out in outputs:
            assert f"VERIFIED {sha}" in out and "FAILED" not in out, out
        places = {line for o in outputs for line in o.splitlines() if "in line" in line}
        # both slots were held by stalled clients: every agent waited and was told its place
        assert {f"[agent] queued for an image stream: {n} in line; asking again every 7s"
                for n in ("1st", "2nd", "3rd", "4th", "5th", "6th")} <= places, outputs  # fmt: skip
        for i in range(1, AGENTS + 1):
            disk = tmp_path / f"disk{i}"
            assert hashlib.sha256(disk.read_bytes()[: src.stat().st_size]).hexdigest() == sha
        # the stalled clients were cut (short of Content-Length) and recorded why
        for client in stalled:
            assert len(await client.rest()) < 16 * 1024 * 1024
        async with lab.ctx.sessions() as session:
            rows = await session.scalars(select(Event).where(Event.kind == "http"))
            details = [e.detail for e in rows]
        assert sum("stalled" in (d.get("aborted") or "") for d in details) == 2, json.dumps(details)
    finally:
        for s in stalled:
            s.writer.close()
        await lab.close()
