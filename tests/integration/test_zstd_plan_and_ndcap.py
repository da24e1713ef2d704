"""A raw+zstd image onto a disk: the plan, the media's ``ndcap unzstd``, the agent's own shell.

The disk must end up holding the master (``raw_size`` bytes hashing to ``raw_sha256``), never
the zstd stream; an agent that cannot decompress is refused in the plan, before it writes
anything (docs/images.md "Compressed images"). The QEMU proof is tests/e2e/test_zstd_deploy.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shlex
import subprocess
from pathlib import Path

import aiohttp
import pytest

from netdeploy.images.hashing import compress_and_hash
from tests.conftest import sha256_of
from tests.integration.agent_shell import (
    BUSYBOX,
    STANDINS,
    agent_functions,
    any_block_device,
    busybox_bin,
    run_script,
)
from tests.integration.conftest_boot import agent_credential, curl
from tests.integration.conftest_images import start_lab
from tests.integration.mc_harness import REPO, free_port_pair, receive_argv
from tests.integration.test_capture_api import build_ndcap

Z1 = "52:54:00:aa:00:09"
Z_NODE = f'\n[[nodes]]\nmac = "{Z1}"\nhostname = "z1"\nimage = "packed"\n'
APPLETS = ["awk", "cat", "cut", "dd", "grep", "head", "kill", "od", "sed", "sha256sum", "sleep",
           "tail", "timeout", "tr", "wget"]  # fmt: skip


def master(path: Path, size: int = 6 * 2**20 + 4321) -> str:
    """A compressible disk image with random parts (an odd size, as a real one may have)."""
    data = bytearray(size)
    for at in (0, 2**20, 5 * 2**20):
        data[at : at + 300_000] = os.urandom(300_000)
    path.write_bytes(bytes(data))
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- ndcap unzstd (the C helper)


def test_ndcap_unzstd_writes_exactly_the_raw_image_or_fails(tmp_path: Path) -> None:
    ndcap = build_ndcap(tmp_path)
    raw = tmp_path / "raw.img"
    want = master(raw)
    size = raw.stat().st_size
    packed = tmp_path / "packed.zst"
    digest = compress_and_hash(raw, packed)  # what `image add --compress zstd` stores
    assert digest.raw.sha256 == want and digest.raw.size == size
    stream = packed.read_bytes()
    disk = tmp_path / "disk"
    old = b"\xaa" * (size + 2**20)  # a used disk: every byte must be overwritten
    disk.write_bytes(old)

    def unzstd(data: bytes, raw_size: int) -> subprocess.CompletedProcess[bytes]:
        cmd = [str(ndcap), "unzstd", str(disk), str(raw_size)]
        return subprocess.run(cmd, input=data, capture_output=True)

    done = unzstd(stream, size)
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().strip() == f"written={size}"
    got = disk.read_bytes()
    assert hashlib.sha256(got[:size]).hexdigest() == want
    assert got[size:] == old[size:]  # nothing past the image (the hold record lives there)

    # a cut stream, garbage, or a stream longer than the catalog says: exit 3, never 0
    disk.write_bytes(old)
    cut = unzstd(stream[: len(stream) // 2], size)
    assert cut.returncode == 3 and b"ended" in cut.stderr, cut.stderr
    assert unzstd(b"not zstd" * 100, size).returncode == 3
    small = unzstd(stream, size - 4096)
    assert small.returncode == 3 and b"more than the image's raw size" in small.stderr
    assert disk.read_bytes()[size - 4096 :] == old[size - 4096 :]
    assert unzstd(stream, size + 1).returncode == 3  # short of what the catalog recorded


# ---------------------------------------------------------------- the plan over HTTP


async def shell_plan(url: str, query: str, token: str) -> dict[str, str]:
    got = await curl(f"{url}/api/nodes/{Z1}/plan?{query}", "-H", f"Authorization: Bearer {token}")
    assert got.status == 200, got.text
    lines = (line.partition("=") for line in got.text.splitlines())
    return {key: "".join(shlex.split(value)) for key, _, value in lines}


async def test_the_plan_names_the_format_and_refuses_media_that_cannot_decompress(
    tmp_path: Path,
) -> None:
    lab = await start_lab(tmp_path / "lab", extra=Z_NODE)
    try:
        raw = tmp_path / "raw.img"
        want = master(raw)
        await lab.add("packed", raw, compress="zstd")
        token = await agent_credential(lab.url, Z1)
        served = lab.cfg.image_path("packed")

        plan = await shell_plan(lab.url, "format=sh&zstd=1", token)
        assert plan["ND_MODE"] == "image", plan
        assert plan["ND_IMAGE_FORMAT"] == "raw+zstd"
        assert plan["ND_IMAGE_RAW_SIZE"] == str(raw.stat().st_size)
        assert plan["ND_IMAGE_RAW_SHA256"] == want
        # the served bytes stay what ND_IMAGE_SHA256/SIZE name (the stream's own check)
        assert plan["ND_IMAGE_SIZE"] == str(served.stat().st_size)
        assert plan["ND_IMAGE_SHA256"] == sha256_of(served)
        assert plan["ND_IMAGE_SPARSE_URL"] == "" and plan["ND_MULTICAST"] == ""

        # media without ndcap (or older than it) does not ask with zstd=1: refused, with what
        # to do; the agent reports it failed and writes nothing
        for query in ("format=sh", "format=sh&zstd=0"):
            plan = await shell_plan(lab.url, query, token)
            assert plan["ND_MODE"] == "error" and plan["ND_IMAGE"] == "", plan
            assert plan["ND_IMAGE_URL"] == "" and plan["ND_IMAGE_FORMAT"] == ""
            why = plan["ND_WHY"]
            assert why.startswith("image packed is stored as raw+zstd, but this node's startup "
                                  "media cannot decompress it"), why  # fmt: skip
            assert "libzstd-dev" in why and "netdeploy media build" in why
            assert 'format = "raw"' in why and "without --compress" in why

        auth = f"Authorization: Bearer {token}"
        got = await curl(f"{lab.url}/api/nodes/{Z1}/plan?zstd=1", "-H", auth)
        image = json.loads(got.body)["image"]
        assert image["format"] == "raw+zstd" and image["raw_sha256"] == want, image

        # a raw image: its format, and no raw_* fields
        base = tmp_path / "base.img"
        master(base)
        await lab.add("base", base)
        token2 = await agent_credential(lab.url, "52:54:00:aa:00:02")
        got = await curl(
            f"{lab.url}/api/nodes/52:54:00:aa:00:02/plan?format=sh&zstd=1",
            "-H", f"Authorization: Bearer {token2}",
        )  # fmt: skip
        assert "ND_IMAGE_FORMAT=raw\n" in got.text
        assert "ND_IMAGE_RAW_SIZE=''\n" in got.text and "ND_IMAGE_RAW_SHA256=''\n" in got.text
    finally:
        await lab.close()


# ---------------------------------------------------------------- never by multicast


def _says_what_to_do(why: str) -> None:
    assert why.startswith("image 'packed' is stored as raw+zstd and is never sent by multicast")
    assert "?zstd=1" in why and "ndcap unzstd" in why and "/images/packed" in why, why
    assert 'format = "raw"' in why and "without --compress" in why, why


async def test_no_multicast_session_serves_a_zstd_image(tmp_path: Path) -> None:
    """Decision 0019: the join route and the admin's session route refuse a raw+zstd image,
    saying how it is fetched instead; a receiver would write the compressed bytes to its disk."""
    port = free_port_pair()
    section = f'\n[multicast]\ninterface = "lo"\nport_range = [{port}, {port + 5}]\n'
    # a file put in place by hand with the sha256 in the config, never `image add`ed: its
    # bytes say zstd though its config says raw
    sneaky = f'\n[images.sneaky]\nfile = "sneaky.img"\nsha256 = "{"ab" * 32}"\n'
    lab = await start_lab(tmp_path / "lab", multicast=True, extra=Z_NODE + sneaky + section)
    assert lab.multicast is not None
    try:
        raw = tmp_path / "raw.img"
        master(raw)
        await lab.add("packed", raw, compress="zstd")
        await lab.add("base", raw)
        token = await agent_credential(lab.url, Z1)
        admin = {"Authorization": f"Bearer {lab.ctx.admin_token}"}
        join = f"{lab.url}/api/multicast/join"
        async with aiohttp.ClientSession() as http:
            for body, headers in (
                ({"image": "packed", "name": "copy"}, admin),  # an admin's `netdeploy receive`
                ({"image": "packed", "mac": Z1}, {"Authorization": f"Bearer {token}"}),  # a node
            ):
                async with http.post(join, json=body, headers=headers) as r:
                    assert r.status == 409, await r.text()
                    _says_what_to_do((await r.json())["error"])
            # the media's C receiver joins with format=args: no words to run, the same refusal
            async with http.post(f"{join}?image=packed&format=args", headers=admin) as r:
                assert r.status == 409
                _says_what_to_do((await r.json())["error"])
            sessions = f"{lab.url}/api/multicast/sessions"
            async with http.post(sessions, json={"image": "packed"}, headers=admin) as r:
                assert r.status == 409
                _says_what_to_do((await r.json())["error"])
            lab.image_path("sneaky").write_bytes(lab.image_path("packed").read_bytes())
            async with http.post(join, json={"image": "sneaky"}, headers=admin) as r:
                assert r.status == 409, await r.text()
                assert "'sneaky' is stored as raw+zstd" in (await r.json())["error"]
            assert lab.multicast.sessions == {}
            # with multicast off the join would answer a unicast URL of the compressed file
            on = lab.multicast.cfg
            lab.multicast.cfg = on.model_copy(update={"enabled": False})
            async with http.post(join, json={"image": "packed"}, headers=admin) as r:
                assert r.status == 409
            async with http.post(join, json={"image": "base"}, headers=admin) as r:
                assert r.status == 200 and (await r.json())["mode"] == "unicast"
            lab.multicast.cfg = on
            async with http.post(join, json={"image": "base", "name": "raw"}, headers=admin) as r:
                assert r.status == 200 and (await r.json())["mode"] == "multicast"
        assert [s.image for s in lab.multicast.sessions.values()] == ["base"]

        # `netdeploy receive` says the same and writes nothing
        out = tmp_path / "copy.img"
        argv = receive_argv(lab.url, out, "--quiet", token=lab.ctx.admin_token, image="packed")
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        said = (await asyncio.wait_for(proc.communicate(), 60))[0].decode()
        assert proc.returncode == 1 and "join refused" in said and "(409)" in said, said
        _says_what_to_do(" ".join(said.split(": ", 1)[1].split()).split("(409): ", 1)[1])
        assert not out.exists()
    finally:
        await lab.close()


# ---------------------------------------------------------------- the agent's shell


@pytest.mark.skipif(BUSYBOX is None, reason="needs busybox (Debian: busybox-static)")
async def test_the_agent_decompresses_onto_the_disk_and_verifies_the_raw_sha256(
    tmp_path: Path,
) -> None:
    """fetch_plan, disk_target, stream_http, verify_disk from bootfiles/agent/init, run by the
    host's busybox with the host-built ndcap against a real server."""
    assert BUSYBOX is not None
    bin_dir = busybox_bin(tmp_path / "bin", APPLETS)
    build_ndcap(bin_dir)
    lab = await start_lab(tmp_path / "lab", extra=Z_NODE)
    try:
        raw = tmp_path / "raw.img"
        want = master(raw)
        size = raw.stat().st_size
        await lab.add("packed", raw, compress="zstd")
        token = await agent_credential(lab.url, Z1)
        disk = tmp_path / "disk"
        disk.write_bytes(b"\x55" * (size + 2**20))
        names = ("fetch_plan", "watch", "image_queue_wait", "stream_http", "disk_target",
                 "hold_mbr_now", "is_zstd", "verify_disk")  # fmt: skip
        functions = agent_functions(*names, tmp=tmp_path)
        script = f"""{STANDINS}
API="{lab.url}/api/nodes/{Z1}"; AUTH="Authorization: Bearer {token}"
DEV={any_block_device()}
{functions}
fetch_plan || exit 9
ND_DISK={disk}
disk_target && stream_http && verify_disk && echo "VERIFIED $DISK_SIZE $SUM"
"""
        out = await run_script(bin_dir, script)
        assert f"VERIFIED {size} {want}" in out and "FAILED" not in out, out
        assert hashlib.sha256(disk.read_bytes()[:size]).hexdigest() == want
    finally:
        await lab.close()


@pytest.mark.skipif(BUSYBOX is None, reason="needs busybox (Debian: busybox-static)")
async def test_the_agent_writes_no_zstd_stream_a_plan_calls_raw(tmp_path: Path) -> None:
    """A server older than decision 0019 hands out a raw+zstd image's plan with no format: the
    served file's sha256 and size only, which the compressed bytes on a disk would verify
    against. The agent looks at the stream's first 4 bytes and writes nothing; a raw image
    passes through untouched; a disk some other path filled with a zstd stream is not trusted."""
    assert BUSYBOX is not None
    bin_dir = busybox_bin(tmp_path / "bin", APPLETS)
    lab = await start_lab(tmp_path / "lab", extra=Z_NODE)
    try:
        raw = tmp_path / "raw.img"
        want = master(raw)
        size = raw.stat().st_size
        await lab.add("packed", raw, compress="zstd")
        await lab.add("base", raw)
        served = lab.image_path("packed").read_bytes()
        zsha = sha256_of(lab.image_path("packed"))
        token = await agent_credential(lab.url, Z1)
        names = ("watch", "image_queue_wait", "is_zstd", "not_zstd", "stream_http",
                 "disk_target", "hold_mbr_now", "verify_disk")  # fmt: skip
        functions = agent_functions(*names, tmp=tmp_path)
        old = b"\x55" * (size + 2**20)

        async def agent(
            image: str, sha: str, length: int, fmt: str | None, call: str, auth: str = token
        ) -> str:
            disk = tmp_path / "disk"
            disk.write_bytes(old)
            plan = f"ND_IMAGE={image}; ND_IMAGE_SHA256={sha}; ND_IMAGE_SIZE={length}"
            if fmt is not None:
                plan += f"; ND_IMAGE_FORMAT={fmt}"
            script = f"""{STANDINS}
AUTH="Authorization: Bearer {auth}"; DEV={any_block_device()}; ND_DISK={disk}
ND_IMAGE_URL="{lab.url}/images/{image}?mac={Z1}"; {plan}
{functions}
{call}
"""
            return await run_script(bin_dir, script)

        write = 'disk_target && stream_http && verify_disk && echo "VERIFIED $SUM"'
        for fmt, says in ((None, "names no format (a server older than this media), which means "
                                 "raw"), ("raw", "says format raw")):  # fmt: skip
            out = await agent("packed", zsha, len(served), fmt, write)
            assert (
                "FAILED: image packed arrives as a zstd stream (it starts with 28 b5 2f fd) but "
                f"its plan {says}; not a byte of it was written to {tmp_path}/disk. Upgrade "
                "netdeploy on the server"
            ) in out, out
            assert "add the image uncompressed" in out and "VERIFIED" not in out, out
            assert (tmp_path / "disk").read_bytes() == old  # not one byte

        # a raw image goes through the same look unchanged (the admin token stands in for the
        # claim of a node whose image it is)
        out = await agent("base", want, size, "raw", write, lab.ctx.admin_token)
        assert f"VERIFIED {want}" in out and "FAILED" not in out, out
        assert (tmp_path / "disk").read_bytes()[:size] == raw.read_bytes()

        # what multicast (or a sparse stream) from such a server would leave: not trusted
        out = await agent(
            "packed", zsha, len(served), None,
            f"dd if={lab.image_path('packed')} of={tmp_path}/disk conv=notrunc 2>/dev/null\n"
            'disk_target && verify_disk && echo "VERIFIED $SUM" || echo "UNTRUSTED $SUM"',
        )  # fmt: skip
        assert "holds a zstd stream (28 b5 2f fd) but the plan says raw; not trusted" in out, out
        assert "UNTRUSTED that of a zstd stream" in out and "VERIFIED" not in out, out
    finally:
        await lab.close()
