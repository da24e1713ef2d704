"""What only the C data plane (netdeploy/tftp/_native.c, decision 0021) can get wrong: files
read per block from a descriptor, the ownership of sockets and descriptors across threads,
shutdown mid-transfer (tests/unit/test_tftp_native_api.py: the build and the C API's guards)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from netdeploy.config import TftpConfig
from netdeploy.tftp.packets import ErrorCode, Op, parse_error
from tests.integration.conftest_tftp import (
    RawClient,
    make_root,
    need,
    plane,  # noqa: F401 (the fixture)
    run,
    tftp_server,
)

pytestmark = pytest.mark.usefixtures("plane")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("windowsize", [1, 4])
async def test_files_beyond_the_cache_are_read_per_block_and_their_descriptors_closed(
    root: Path, tmp_path: Path, windowsize: int
) -> None:
    """cache_file_max_bytes = 0: every file is read with pread from its descriptor; after
    the transfers end nothing stays open (sockets are the plane's, files the loop's)."""
    config = TftpConfig(cache_file_max_bytes=0)
    names = ["odd.bin", "exact1468.bin", "empty.bin", "sub/nested.bin"]
    before = open_fds()
    async with tftp_server(root, config) as (server, finished):
        client = RawClient(server.port)
        for name in names:
            data = await fetch_windowed(client, name, blksize=1468, windowsize=windowsize)
            assert data == (root / name).read_bytes()
        stats = await finished.wait(len(names))
        client.close()
    assert {s.outcome for s in stats} == {"ok"}
    assert [s.windowsize for s in stats] == [windowsize] * len(names)
    assert open_fds() == before


async def fetch_windowed(client: RawClient, name: str, blksize: int, windowsize: int) -> bytes:
    """A read acknowledging the last block of each window (or the last of the file)."""
    await client.rrq(name, blksize=blksize, windowsize=windowsize)
    packet, addr = await client.recv()
    assert packet[1] == Op.OACK
    await client.ack(0, addr)
    out, expected = bytearray(), 1
    while True:
        packet, addr = await client.recv()
        assert packet[1] == Op.DATA, packet
        block = int.from_bytes(packet[2:4], "big")
        assert block == expected & 0xFFFF
        out += packet[4:]
        last = len(packet) - 4 < blksize
        if last or expected % windowsize == 0:
            await client.ack(block, addr)
        expected += 1
        if last:
            return bytes(out)


async def test_shutdown_mid_transfer_tells_the_client_and_leaks_nothing(root: Path) -> None:
    before = open_fds()
    async with tftp_server(root, TftpConfig(cache_file_max_bytes=0)) as (server, finished):
        client = RawClient(server.port)
        await client.rrq("odd.bin")
        packet, _ = await client.recv()
        assert packet[1] == Op.DATA  # the transfer runs, unacknowledged
        await server.stop()
        error = parse_error((await client.recv())[0])
        assert error == (ErrorCode.UNDEFINED, "server shutting down; retry shortly")
        (stats,) = await finished.wait(1)
        assert stats.outcome == "error"
        client.close()
    assert open_fds() == before


async def test_a_storm_of_real_clients_spreads_over_every_worker(
    root: Path,
    tmp_path: Path,
    plane: str,  # noqa: F811 (the fixture, by value)
) -> None:
    """40 curl fetches at once across two worker threads: every copy is whole and each
    transfer's record counts its blocks (a worker's report, not the loop's guess)."""
    curl = need("curl")
    config = TftpConfig(native_threads=2, max_per_client=64)
    async with tftp_server(root, config) as (server, finished):
        if plane == "native":
            assert server.native is not None and server.native.threads == 2
        url = f"tftp://127.0.0.1:{server.port}/odd.bin"
        outs = [tmp_path / f"copy{i}" for i in range(40)]
        results = await asyncio.gather(
            *(run(curl, "-sS", "--tftp-blksize", "1468", "-o", str(o), url) for o in outs)
        )
        stats = await finished.wait(40)
    assert [code for code, _ in results] == [0] * 40, results
    want = (root / "odd.bin").read_bytes()
    assert all(o.read_bytes() == want for o in outs)
    assert {(s.outcome, s.blocks) for s in stats} == {("ok", len(want) // 1468 + 1)}
