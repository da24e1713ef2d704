"""Network capture's HTTP protocol against the real app: mark, boot, upload segments made by the
media's own ndcap (compiled here), a cut upload resumed at the offset the server names, both
sides' sha256, the image added with preflight, and the machine's next boot its own disk."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import aiohttp
import pytest

from netdeploy.images import sparse
from tests.conftest import REPO, sha256_of
from tests.e2e.diskimage import make_image
from tests.integration.conftest_boot import agent_credential, boot_server, curl

MAC = "52:54:00:00:30:01"  # not in the demo config: a master on the bench
NDCAP_SOURCE = REPO / "bootfiles" / "agent" / "ndcap.c"


def build_ndcap(into: Path) -> Path:
    if shutil.which("gcc") is None or not Path("/usr/include/zstd.h").exists():
        pytest.skip("needs gcc and libzstd-dev to build ndcap")
    binary = into / "ndcap"
    subprocess.run(
        ["gcc", "-static", "-O2", "-o", str(binary), str(NDCAP_SOURCE), "-lzstd"], check=True
    )
    return binary


def pack(ndcap: Path, disk: Path, offset: int, length: int) -> bytes:
    done = subprocess.run(
        [str(ndcap), "pack", str(disk), str(offset), str(length)], capture_output=True, check=True
    )
    return done.stdout


async def cut_upload(url: str, token: str, body: bytes, keep: int) -> None:
    """Send the headers and the first ``keep`` bytes of a segment upload, then hang up."""
    parts = urllib.parse.urlsplit(url)
    _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = (
        f"POST {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/zstd\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body[:keep])
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.3)  # let the server notice the cut


async def test_capture_protocol_with_a_cut_and_resume(tmp_path: Path) -> None:
    ndcap = build_ndcap(tmp_path)
    disk = tmp_path / "master.img"
    make_image(disk, size_mib=96)  # MBR + FAT with 12 MiB of files: 3 segments of 32 MiB
    size = disk.stat().st_size
    disk_sha = sha256_of(disk)
    async with boot_server(tmp_path) as srv, aiohttp.ClientSession() as http:
        admin = {"Authorization": f"Bearer {srv.ctx.admin_token}"}
        body = {"image": "debian-12", "node": MAC.replace(":", "-"), "actor": "test"}
        async with http.post(f"{srv.url}/api/admin/captures", json=body) as r:
            assert r.status == 401  # the admin API needs the admin token
        async with http.post(f"{srv.url}/api/admin/captures", json=body, headers=admin) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["state"] == "requested"
        script = (await curl(f"{srv.url}/boot/{MAC}.ipxe")).text
        assert "nd.mode=capture" in script and "nd.capture=debian-12" in script
        token = await agent_credential(srv.url, MAC)  # the agent claims, then speaks with it
        auth = {"Authorization": f"Bearer {token}"}
        plan = (
            await curl(
                f"{srv.url}/api/nodes/{MAC}/plan?format=sh", "-H", f"Authorization: Bearer {token}"
            )
        ).text
        assert "ND_MODE=capture" in plan
        url = f"{srv.url}/api/nodes/{MAC}/capture"
        assert f"ND_CAPTURE_URL={url}" in plan
        async with http.get(url, params={"size": size}) as r:
            assert r.status == 401  # the node's credential only (declared auth)
        async with http.get(url, params={"size": size, "format": "sh"}, headers=auth) as r:
            answer = dict(line.split("=", 1) for line in (await r.text()).split())
        assert answer["ND_CAPTURE_OFFSET"] == "0"
        segment = int(answer["ND_CAPTURE_SEGMENT"])
        assert size == 3 * segment
        first = pack(ndcap, disk, 0, segment)
        async with http.post(f"{url}/segments?offset=0", data=first, headers=auth) as r:
            assert r.status == 200, await r.text()
        second = pack(ndcap, disk, segment, segment)
        await cut_upload(f"{url}/segments?offset={segment}", token, second, len(second) // 2)
        # the cut segment was not committed: a later one is refused with where to resume
        third = pack(ndcap, disk, 2 * segment, segment)
        async with http.post(f"{url}/segments?offset={2 * segment}", data=third, headers=auth) as r:
            assert r.status == 409 and (await r.json())["offset"] == segment
        async with http.get(url, params={"size": size}, headers=auth) as r:
            assert (await r.json())["offset"] == segment  # the agent asks after its cut
        for offset, data in ((segment, second), (2 * segment, third)):
            async with http.post(f"{url}/segments?offset={offset}", data=data, headers=auth) as r:
                assert r.status == 200, await r.text()
        # a sum that is not the server's copy fails the capture (the disk is not trusted)
        async with http.post(f"{url}/done", json={"sha256": "0" * 64}, headers=auth) as r:
            result = await r.json()
        assert result["state"] == "failed" and "sha256 mismatch" in result["detail"]
        # a failed capture sends the machine to its own disk; the admin marks it again
        async with http.post(f"{srv.url}/api/admin/captures", json=body, headers=admin) as r:
            assert r.status == 200
        token = await agent_credential(srv.url, MAC)  # the agent claims, then speaks with it
        auth = {"Authorization": f"Bearer {token}"}
        async with http.get(url, params={"size": size}, headers=auth) as r:
            assert (await r.json())["offset"] == 0
        wire = 0
        for offset in range(0, size, segment):
            data = pack(ndcap, disk, offset, segment)
            wire += len(data)
            async with http.post(f"{url}/segments?offset={offset}", data=data, headers=auth) as r:
                assert r.status == 200, await r.text()
        async with http.post(f"{url}/done", json={"sha256": disk_sha}, headers=auth) as r:
            result = await r.json()
        assert result["state"] == "done", result
        assert result["sha256"] == disk_sha and result["wire_bytes"] == wire
        assert wire < 4 * 2**20, wire  # 96 MiB disk, mostly zero, compressible files
        read = {"Authorization": f"Bearer {srv.ctx.admin_token}"}  # a read route
        async with http.get(f"{srv.url}/api/images/debian-12", headers=read) as r:
            image = await r.json()
        assert image["status"] == "ok" and image["sha256"] == disk_sha
        assert image["facts"]["captured_from"]["mac"] == MAC
        assert "preflight" in image["facts"]
        assert Path(image["path"]).read_bytes() == disk.read_bytes()
        assert not list((tmp_path / "state" / "images").glob(".*partial"))
        # never a loop: the next boot is the machine's own disk
        script = (await curl(f"{srv.url}/boot/{MAC}.ipxe")).text
        assert "nd.mode" not in script, script
        events = await srv.events("capture", MAC)
        texts = [json.dumps(e.detail) for e in events]
        assert any('"progress": 100.0' in t for t in texts), texts
        assert any("resuming" in t or "resumes" in t for t in texts) or len(events) > 6


def test_python_and_c_agree_on_the_sparse_format(tmp_path: Path) -> None:
    """ndcap's segments parse with the server's parser; the server's encoder unpacks with ndcap."""
    import zstandard

    ndcap = build_ndcap(tmp_path)
    disk = tmp_path / "d.img"
    make_image(disk, size_mib=16)
    frame = pack(ndcap, disk, 0, 16 * 2**20)
    parser = sparse.SegmentParser()
    parser.feed(zstandard.ZstdDecompressor().decompressobj().decompress(frame))
    seg = parser.finish()
    rebuilt = bytearray(16 * 2**20)
    for at, data in seg.blocks:
        rebuilt[at : at + len(data)] = data
    assert bytes(rebuilt) == disk.read_bytes()
    with open(disk, "rb") as fh:
        packed = b"".join(  # four segments, one zstd frame each, concatenated
            zstandard.ZstdCompressor().compress(b"".join(sparse.encode(fh, off, 4 * 2**20)))
            for off in range(0, 16 * 2**20, 4 * 2**20)
        )
    out = tmp_path / "out.img"
    out.write_bytes(b"\xff" * 16 * 2**20)  # old contents: zero blocks must be written as zeros
    subprocess.run([str(ndcap), "unpack", str(out)], input=packed, check=True, capture_output=True)
    assert out.read_bytes() == disk.read_bytes()


async def test_a_raw_image_is_served_sparse_and_unpacks_to_the_same_bytes(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    ndcap = build_ndcap(tmp_path)
    disk = tmp_path / "master.img"
    make_image(disk, size_mib=80)
    with open(disk, "r+b") as fh:  # a hole-punched region and data past the first segment
        fh.seek(70 * 2**20)
        fh.write(b"late data" * 1000)
    async with boot_server(tmp_path) as srv:
        cfg = srv.ctx.config
        added = run_cli(
            "image", "add", "debian-12", str(disk), "-q",
            "--config", str(cfg.source), "--state-dir", str(tmp_path / "state"),
            "--db", cfg.database_url,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        admin = ("-H", f"Authorization: Bearer {srv.ctx.admin_token}")  # or the imaging node
        assert (await curl(f"{srv.url}/images/debian-12/sparse?mac={MAC}")).status == 401
        got = await curl(f"{srv.url}/images/debian-12/sparse?mac={MAC}", *admin)
        assert got.status == 200, got.text
        assert "x-image-sha256: " + sha256_of(disk) in got.headers.lower()
        assert len(got.body) < 2 * 2**20  # 80 MiB image, mostly zero
        out = tmp_path / "target.img"
        out.write_bytes(b"\xa5" * disk.stat().st_size)  # a used disk: skipped blocks must be zeroed
        subprocess.run([str(ndcap), "unpack", str(out)], input=got.body, check=True)
        assert out.read_bytes() == disk.read_bytes()
        missing = await curl(f"{srv.url}/images/nosuch/sparse", *admin)
        assert missing.status == 404
        events = await srv.events("http")
        assert any(e.detail.get("what") == "image-sparse" and e.detail["complete"] for e in events)


async def test_hostile_segments_are_refused_without_writing(tmp_path: Path) -> None:
    """A zstd bomb, garbage, a record outside its segment, a truncated frame: 400, nothing
    committed, and the capture still resumes at 0."""
    import struct

    import zstandard

    size = 64 * 2**20
    async with boot_server(tmp_path) as srv, aiohttp.ClientSession() as http:
        admin = {"Authorization": f"Bearer {srv.ctx.admin_token}"}
        body = {"image": "debian-12", "node": MAC}
        async with http.post(f"{srv.url}/api/admin/captures", json=body, headers=admin) as r:
            assert r.status == 200
        auth = {"Authorization": f"Bearer {await agent_credential(srv.url, MAC)}"}
        url = f"{srv.url}/api/nodes/{MAC}/capture"
        async with http.get(url, params={"size": size}, headers=auth) as r:
            assert (await r.json())["offset"] == 0
        z = zstandard.ZstdCompressor(level=3)
        head = sparse.HEADER.pack(sparse.MAGIC, 0, 32 * 2**20, sparse.BLOCK, 0)
        outside = (
            head + sparse.RECORD.pack(40 * 2**20, 4) + b"abcd" + struct.pack("<QI", sparse.END, 0)
        )
        bomb = z.compress(head + bytes(64 << 20))  # 64 MiB of zeros in a few KiB
        whole = z.compress(head + struct.pack("<QI", sparse.END, 0))
        for name, data in (
            ("garbage", b"not zstd at all" * 100),
            ("bomb", bomb),
            ("outside", z.compress(outside)),
            ("truncated", whole[:-6]),
        ):
            async with http.post(f"{url}/segments?offset=0", data=data, headers=auth) as r:
                assert r.status == 400, (name, r.status, await r.text())
                answer = await r.json()
                assert answer["offset"] == 0 and "bad segment" in answer["error"], name
        async with http.get(url, params={"size": size}, headers=auth) as r:
            assert (await r.json())["offset"] == 0
        # cancel: the mark and the partial upload are gone; the next boot is the rollout's
        partial = list((tmp_path / "state" / "images").glob(".*partial"))
        assert partial
        async with http.delete(f"{srv.url}/api/admin/captures/{MAC}", headers=admin) as r:
            assert r.status == 200 and (await r.json())["state"] == "capturing"
        assert not any(p.exists() for p in partial)
        script = (await curl(f"{srv.url}/boot/{MAC}.ipxe")).text
        assert "nd.mode=discover" in script, script
