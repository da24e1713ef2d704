"""GET/HEAD /images/{name} against real clients: curl and aiohttp's client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import sha256_of
from tests.integration.conftest_images import IMAGE_SIZE, MAC_N2, MAC_N3, Lab, make_image, start_lab

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@pytest.fixture
async def lab(tmp_path: Path):
    lab = await start_lab(tmp_path)
    try:
        yield lab
    finally:
        await lab.close()


async def added(lab: Lab, name: str = "base") -> tuple[bytes, str]:
    src = lab.root / f"{name}-capture.img"
    sha = make_image(src)
    await lab.add(name, src)
    return src.read_bytes(), sha


async def curl(*args: str) -> tuple[int, bytes, str]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out, err.decode()


def headers_of(dump: str) -> tuple[int, dict[str, str]]:
    """Status and headers of the last response in a ``curl -D`` dump."""
    block = dump.strip().split("\r\n\r\n")[-1].split("\r\n")
    status = int(block[0].split()[1])
    headers = {}
    for line in block[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers


def admin(lab: Lab) -> tuple[str, str]:
    """curl arguments for the admin token: GET /images/{name} needs it, or a node's claim."""
    return ("-H", f"Authorization: Bearer {lab.ctx.admin_token}")


def admin_headers(lab: Lab) -> dict[str, str]:
    return {"Authorization": f"Bearer {lab.ctx.admin_token}"}


async def fetch(
    lab: Lab, path: str, *curl_args: str, out: Path | None = None
) -> tuple[int, dict[str, str], bytes]:
    dump = lab.root / "headers.txt"
    target = out or lab.root / "body.bin"
    dump.unlink(missing_ok=True)
    target.unlink(missing_ok=True)
    rc, _, err = await curl(
        "-D", str(dump), "-o", str(target), *admin(lab), *curl_args, lab.url + path
    )  # fmt: skip
    assert rc == 0, err
    status, headers = headers_of(dump.read_bytes().decode())
    return status, headers, target.read_bytes() if target.exists() else b""


async def test_get_and_head_carry_size_etag_and_checksum(lab: Lab) -> None:
    _, sha = await added(lab)
    status, h, body = await fetch(lab, "/images/base")
    assert status == 200
    assert hashlib.sha256(body).hexdigest() == sha
    assert h["content-length"] == str(IMAGE_SIZE)
    assert h["etag"] == f'"sha256-{sha}"'
    assert h["x-image-sha256"] == sha
    b64 = base64.b64encode(bytes.fromhex(sha)).decode()
    assert h["repr-digest"] == f"sha-256=:{b64}:"
    assert h["digest"] == f"SHA-256={b64}"
    assert h["accept-ranges"] == "bytes"
    assert h["x-image-format"] == "raw"

    async with (
        aiohttp.ClientSession() as s,
        s.head(lab.url + "/images/base", headers=admin_headers(lab)) as r,
    ):
        assert r.status == 200 and await r.read() == b""
        assert r.headers["Content-Length"] == str(IMAGE_SIZE)
        assert r.headers["ETag"] == h["etag"]
        assert r.headers["X-Image-SHA256"] == sha


async def test_curl_ranges(lab: Lab) -> None:
    data, _ = await added(lab)
    status, h, body = await fetch(lab, "/images/base", "--range", "100-1099")
    assert (status, body) == (206, data[100:1100])
    assert h["content-range"] == f"bytes 100-1099/{IMAGE_SIZE}"
    assert h["content-length"] == "1000"
    status, h, body = await fetch(lab, "/images/base", "--range", "4000000-")
    assert (status, body) == (206, data[4000000:])
    status, h, body = await fetch(lab, "/images/base", "-H", "Range: bytes=-500")
    assert (status, body) == (206, data[-500:])
    assert h["content-range"] == f"bytes {IMAGE_SIZE - 500}-{IMAGE_SIZE - 1}/{IMAGE_SIZE}"
    # a last byte past the end is clamped (RFC 9110 §14.1.2)
    status, h, body = await fetch(lab, "/images/base", "--range", f"{IMAGE_SIZE - 10}-99999999")
    assert (status, body) == (206, data[-10:])


async def test_resume_with_curl_after_killed_transfer(lab: Lab) -> None:
    big = 24 * 1024 * 1024  # curl's --limit-rate bursts a few MiB at first: stay well above
    src = lab.root / "big.img"
    sha = make_image(src, big)
    await lab.add("base", src)
    out = lab.root / "resumed.img"
    url = f"{lab.url}/images/base?mac={MAC_N2}"
    slow = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--limit-rate", "512K", *admin(lab), "-o", str(out), url
    )
    while not out.exists() or out.stat().st_size < 256 * 1024:
        await asyncio.sleep(0.02)
    slow.kill()  # SIGKILL mid-transfer, like a node losing power
    await slow.wait()
    partial = out.stat().st_size
    assert 0 < partial < big
    rc, _, err = await curl("-C", "-", *admin(lab), "-o", str(out), url)
    assert rc == 0, err
    assert sha256_of(out) == sha
    for _ in range(200):  # the aborted stream's handler finishes its accounting
        transfers = {t["mac"]: t for t in await json_get(lab, "/api/transfers", key="transfers")}
        if transfers[MAC_N2]["streams"] == 2 and transfers[MAC_N2]["complete"]:
            break
        await asyncio.sleep(0.05)
    n2 = transfers[MAC_N2]
    assert n2["hostname"] == "n2" and n2["complete"] and n2["position"] == big
    assert n2["streams"] == 2 and n2["bytes_sent"] >= big


async def json_get(lab: Lab, path: str, key: str | None = None):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as s, s.get(lab.url + path, headers=admin_headers(lab)) as r:
        body = await r.json()
    return body[key] if key else body


async def test_parallel_aiohttp_downloads_all_verify(lab: Lab) -> None:
    _, sha = await added(lab)
    macs = [MAC_N2, MAC_N3, None, None]

    async def download(session: aiohttp.ClientSession, mac: str | None) -> str:
        headers = {"X-Netdeploy-Mac": mac} if mac else {}
        headers.update(admin_headers(lab))
        h = hashlib.sha256()
        async with session.get(f"{lab.url}/images/base", headers=headers) as r:
            assert r.status == 200
            assert r.headers["X-Image-SHA256"] == sha
            async for block in r.content.iter_chunked(256 * 1024):
                h.update(block)
        return h.hexdigest()

    sent_before, active_before = await metric(lab, SENT_BASE), await metric(lab, ACTIVE)
    async with aiohttp.ClientSession() as session:
        digests = await asyncio.gather(*(download(session, m) for m in macs * 2))
    assert digests == [sha] * 8
    # the client may hold the last byte before the server's handler has finished its books
    for _ in range(200):
        transfers = await json_get(lab, "/api/transfers")
        if transfers["active_streams"] == 0:
            break
        await asyncio.sleep(0.05)
    assert transfers["active_streams"] == 0
    by_key = {t["mac"] or f"anon:{t['peer']}": t for t in transfers["transfers"]}
    assert by_key[MAC_N2]["bytes_sent"] == 2 * IMAGE_SIZE
    assert by_key[MAC_N3]["bytes_sent"] == 2 * IMAGE_SIZE
    assert by_key["anon:127.0.0.1"]["anonymous"]
    assert by_key["anon:127.0.0.1"]["bytes_sent"] == 4 * IMAGE_SIZE
    # metrics are process-wide (other tests in this process count too): compare differences
    assert await metric(lab, SENT_BASE) - sent_before == 8 * IMAGE_SIZE
    assert await metric(lab, ACTIVE) == active_before


SENT_BASE = 'netdeploy_image_bytes_sent_total{image="base"}'
ACTIVE = "netdeploy_image_streams_active"


async def metric(lab: Lab, name: str) -> float:
    async with (
        aiohttp.ClientSession() as s,
        s.get(lab.url + "/metrics", headers=admin_headers(lab)) as r,
    ):
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return 0.0


async def test_unknown_or_malformed_mac(lab: Lab) -> None:
    await added(lab)
    status, _, _ = await fetch(lab, "/images/base?mac=52:54:00:ff:ff:ff", "--range", "0-9")
    assert status == 206  # a well-formed MAC we do not know: served, accounted as anonymous
    transfers = await json_get(lab, "/api/transfers", key="transfers")
    assert [t["mac"] for t in transfers] == [None]
    status, _, body = await fetch(lab, "/images/base?mac=not-a-mac")
    assert status == 400 and "not a MAC address" in json.loads(body)["error"]
    status, _, body = await fetch(
        lab, f"/images/base?mac={MAC_N2}", "-H", f"X-Netdeploy-Mac: {MAC_N3}"
    )
    assert status == 400 and "different MACs" in json.loads(body)["error"]


async def test_if_range_if_match_if_none_match(lab: Lab) -> None:
    data, sha = await added(lab)
    etag = f'"sha256-{sha}"'
    status, _, body = await fetch(lab, "/images/base", "-r", "10-19", "-H", f"If-Range: {etag}")
    assert (status, body) == (206, data[10:20])
    other = '"sha256-' + "0" * 64 + '"'
    status, _, body = await fetch(lab, "/images/base", "-r", "10-19", "-H", f"If-Range: {other}")
    assert status == 200 and body == data  # another image: the whole current one, never a splice
    status, _, body = await fetch(lab, "/images/base", "-r", "10-19", "-H", f"If-Range: W/{etag}")
    assert status == 200  # weak tags never match If-Range
    status, _, body = await fetch(lab, "/images/base", "-H", f"If-Match: {other}")
    assert status == 412 and json.loads(body)["etag"] == etag
    status, _, body = await fetch(lab, "/images/base", "-r", "0-3", "-H", f"If-Match: {etag}")
    assert (status, body) == (206, data[:4])
    status, h, body = await fetch(lab, "/images/base", "-H", f"If-None-Match: {etag}")
    assert (status, body) == (304, b"") and h["etag"] == etag


@pytest.mark.parametrize(
    "header",
    ["bytes=abc", "bytes=5-2", "bytes=0-1,5-6", "bytes=", "bytes=-", "bytes=-0", "bytes= 1 - 2"],
)
async def test_malformed_ranges_get_416(lab: Lab, header: str) -> None:
    await added(lab)
    status, h, body = await fetch(lab, "/images/base", "-H", f"Range: {header}")
    assert status == 416
    assert h["content-range"] == f"bytes */{IMAGE_SIZE}"
    assert json.loads(body)["error"]


async def test_unsatisfiable_range_416_and_unknown_unit_ignored(lab: Lab) -> None:
    data, _ = await added(lab)
    status, h, body = await fetch(lab, "/images/base", "--range", f"{IMAGE_SIZE}-")
    assert status == 416 and h["content-range"] == f"bytes */{IMAGE_SIZE}"
    assert "the image has" in json.loads(body)["error"]
    status, _, body = await fetch(lab, "/images/base", "-H", "Range: items=0-1")
    assert (status, body) == (200, data)  # RFC 9110 §14.2: unknown unit is ignored


@pytest.mark.parametrize(
    "path",
    [
        "/images/../etc/passwd",
        "/images/..%2f..%2f..%2fetc%2fpasswd",
        "/images/%2e%2e",
        "/images/.base",
        "/images/base%00",
        "/images/base/../../etc/passwd",
        "/images/%2fetc%2fpasswd",
        "/images/nosuch",
    ],
)
async def test_path_traversal_and_unknown_names_get_404(lab: Lab, path: str) -> None:
    await added(lab)
    status, _, body = await fetch(lab, path, "--path-as-is")
    assert status == 404
    assert b"root:" not in body and len(body) < 4096


async def test_unknown_image_json_lists_the_known_ones(lab: Lab) -> None:
    status, _, body = await fetch(lab, "/images/nosuch")
    assert status == 404
    assert json.loads(body)["images"] == ["base", "clu", "packed"]


async def test_not_added_image_is_refused(lab: Lab) -> None:
    status, _, body = await fetch(lab, "/images/base")
    assert status == 409
    assert "netdeploy image add base" in json.loads(body)["error"]


async def test_truncated_file_is_marked_bad_and_never_served(lab: Lab) -> None:
    data, _ = await added(lab)
    path = lab.image_path("base")
    os.truncate(path, IMAGE_SIZE - 1000)
    for args in ((), ("--range", "0-9")):
        status, _, body = await fetch(lab, "/images/base", *args)
        error = json.loads(body)
        assert status == 409 and error["status"] == "bad" and "re-add it" in error["error"]
        assert f"size changed from {IMAGE_SIZE} to {IMAGE_SIZE - 1000}" in error["error"]
    status, _, _ = await fetch(lab, "/images/base", "-I")
    assert status == 409
    path.write_bytes(data)  # same bytes back: still refused until re-added (mtime differs)
    status, _, _ = await fetch(lab, "/images/base")
    assert status == 409
    [image] = [i for i in await json_get(lab, "/api/images", key="images") if i["name"] == "base"]
    assert image["status"] == "bad" and "size changed" in image["status_detail"]
    await lab.add("base", path)
    status, _, body = await fetch(lab, "/images/base")
    assert (status, body) == (200, data)


async def test_unreadable_or_missing_file(lab: Lab) -> None:
    await added(lab)
    path = lab.image_path("base")
    path.unlink()
    path.mkdir()  # open() fails with EISDIR: a file we cannot read
    status, _, body = await fetch(lab, "/images/base")
    assert status == 409 and "cannot read" in json.loads(body)["error"]
    path.rmdir()
    await added(lab)
    path.unlink()
    status, _, body = await fetch(lab, "/images/base")
    error = json.loads(body)
    assert status == 409 and error["status"] == "missing" and "does not exist" in error["error"]


class StalledClient:
    """A real HTTP/1.1 client with a tiny receive buffer that reads only when told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes):
        self.reader, self.writer, self.head = reader, writer, head

    @classmethod
    async def get(cls, lab: Lab, path: str) -> StalledClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.setblocking(False)
        port = int(lab.url.rsplit(":", 1)[1])
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        auth = f"Authorization: Bearer {lab.ctx.admin_token}"
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n".encode())
        return cls(reader, writer, await reader.readuntil(b"\r\n\r\n"))

    async def rest(self, already: int = 0) -> bytes:
        """The rest of the body: up to Content-Length, or less if the server aborts."""
        length = int(self.head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        chunks, got = [], already
        while got < length and (chunk := await self.reader.read(1024 * 1024)):
            chunks.append(chunk)
            got += len(chunk)
        self.writer.close()
        return b"".join(chunks)


async def test_stream_limit_answers_503_with_retry_after(tmp_path: Path) -> None:
    lab = await start_lab(tmp_path, max_streams=1)
    try:
        big = 16 * 1024 * 1024  # more than the socket buffers hold: the stream stays open
        src = lab.root / "big.img"
        sha = make_image(src, big)
        await lab.add("base", src)
        stalled = await StalledClient.get(lab, "/images/base")
        assert b"200 OK" in stalled.head
        assert (await json_get(lab, "/api/transfers"))["active_streams"] == 1
        status, h, body = await fetch(lab, "/images/base")
        assert status == 503 and h["retry-after"] == "7"
        assert "max_image_streams" in json.loads(body)["error"]
        status, _, body = await fetch(lab, "/images/base", "--range", "0-511")
        assert (status, body) == (206, src.read_bytes()[:512])  # small probes never wait
        assert hashlib.sha256(await stalled.rest()).hexdigest() == sha
        for _ in range(200):  # the finished stream frees its slot once its handler returns
            if (await json_get(lab, "/api/transfers"))["active_streams"] == 0:
                break
            await asyncio.sleep(0.05)
        status, _, body = await fetch(lab, "/images/base")
        assert status == 200 and hashlib.sha256(body).hexdigest() == sha
    finally:
        await lab.close()


async def test_file_modified_during_transfer_aborts_it(lab: Lab) -> None:
    """An image changed in place mid-stream: the client gets less than Content-Length."""
    big = 16 * 1024 * 1024  # more than the kernel buffers on both ends of the connection
    src = lab.root / "big.img"
    make_image(src, big)
    await lab.add("base", src)
    client = await StalledClient.get(lab, "/images/base")
    assert f"Content-Length: {big}".encode() in client.head
    received = len(await client.reader.readexactly(256 * 1024))
    with open(lab.image_path("base"), "r+b") as fh:  # in place: same size, same inode
        fh.seek(big - 4096)
        fh.write(b"\0" * 4096)
    received += len(await client.rest(already=received))
    assert received < big  # aborted short of Content-Length: never a complete-looking mix
    await asyncio.sleep(0.05)
    status, _, body = await fetch(lab, "/images/base")
    assert status == 409 and "modified" in json.loads(body)["error"]


async def test_zstd_image_headers_and_content(lab: Lab) -> None:
    import zstandard

    src = lab.root / "raw-capture.img"
    raw_sha = make_image(src)
    await lab.add("packed", src, compress="zstd")
    status, h, body = await fetch(lab, "/images/packed")
    assert status == 200 and h["x-image-format"] == "raw+zstd"
    assert h["x-image-sha256"] == hashlib.sha256(body).hexdigest()
    assert h["x-image-raw-sha256"] == raw_sha and h["x-image-raw-size"] == str(IMAGE_SIZE)
    raw = zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True).read()
    assert hashlib.sha256(raw).hexdigest() == raw_sha
