"""The media's C receiver (bootfiles/agent/ndmc-recv.c) against the Python sender."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from netdeploy.multicast import wire
from tests.conftest import sha256_of
from tests.integration.mc_harness import IMAGE, REPO, run_receiver, running_server, wait_for

SOURCE = REPO / "bootfiles" / "agent" / "ndmc-recv.c"


@pytest.fixture(scope="module")
def ndmc_recv(tmp_path_factory) -> Path:
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed (tests/debian-packages.txt lists it)")
    binary = tmp_path_factory.mktemp("c") / "ndmc-recv"
    subprocess.run(
        ["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", binary, SOURCE], check=True
    )
    return binary


async def join_args(server, name: str) -> list[str]:
    """What the agent does: `wget -qO- .../join?...&format=args`."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{server.url}/api/multicast/join",
            params={"image": IMAGE, "name": name, "format": "args"},
            headers=server.admin,
        ) as r,
    ):
        assert r.status == 200, await r.text()
        return (await r.text()).split()


async def run_c(binary: Path, args: list[str], *extra: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        binary, *args, *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_c_and_python_receivers_share_one_session(tmp_path, ndmc_recv):
    async with running_server(
        tmp_path, size=5 * 2**20 + 123, min_receivers=3, max_wait=0.3
    ) as server:
        c1, c2 = await join_args(server, "c1"), await join_args(server, "c2")
        results = await asyncio.gather(
            run_c(ndmc_recv, c1, "--out", str(tmp_path / "c1.img")),
            run_c(ndmc_recv, c2, "--out", str(tmp_path / "c2.img"), "--quiet"),
            run_receiver(server.url, tmp_path / "py.img", "--name", "py"),
        )
        for status, output in results:
            assert status == 0, output
        for name in ("c1", "c2", "py"):
            assert sha256_of(tmp_path / f"{name}.img") == server.sha256
        await wait_for(lambda: server.service.finished)
        [session] = server.service.finished
        assert sorted(r["state"] for r in session["receivers"]) == ["done"] * 3


async def test_c_receiver_reports_a_wrong_sha256_and_exits_2(tmp_path, ndmc_recv):
    async with running_server(tmp_path, min_receivers=1, max_wait=0.1) as server:
        args = await join_args(server, "c")
        args[args.index("--sha256") + 1] = "0" * 64  # as if a slice had been poisoned
        status, output = await run_c(ndmc_recv, args, "--out", str(tmp_path / "c.img"))
        assert status == 2, output
        assert "NOT match" in output
        await wait_for(lambda: server.service.finished)
        [session] = server.service.finished
        assert session["receivers"][0]["state"] == "bad"


async def test_c_receiver_ignores_forged_datagrams_and_writes_missing_ranges(tmp_path, ndmc_recv):
    """FINISH before the copy is complete: exit 3 with the byte ranges to fetch by unicast."""
    async with running_server(tmp_path, min_receivers=2, max_wait=600) as server:
        args = await join_args(server, "c")
        await join_args(server, "placeholder")  # keeps the session waiting: nothing is sent
        session = next(iter(server.service.sessions.values()))
        missing = tmp_path / "missing"
        proc = asyncio.create_task(
            run_c(ndmc_recv, args, "--out", str(tmp_path / "c.img"), "--missing", str(missing))
        )
        await asyncio.sleep(0.5)
        sock = __import__("socket").socket(2, 2)
        dest = (session.params.group, session.params.data_port)
        sock.setsockopt(0, 32, __import__("socket").inet_aton("127.0.0.1"))  # IP_MULTICAST_IF
        s, size = session.id, session.size
        first = wire.slice_length(0, size, session.params.slice_size)
        for datagram in (
            wire.pack_data(s ^ 1, 0, bytes(first)),  # another session
            wire.pack_data(s, session.slices, b"x"),  # out of range
            wire.pack_data(s, 0, bytes(first))[:-1],  # truncated
            wire.pack_data(s, 0, bytes(first))[:16] + b"\x01" * first,  # bad CRC
            b"\x4e\x44\x01",  # truncated header
            wire.pack_finish(s ^ 1),  # FINISH of another session
            wire.pack_finish(s),  # and the real one ends it
        ):
            sock.sendto(datagram, dest)
        sock.close()
        status, output = await proc
        assert status == 3, output
        last = session.size - 1
        assert missing.read_text() == f"0 {last}\n"  # nothing forged was taken as data
