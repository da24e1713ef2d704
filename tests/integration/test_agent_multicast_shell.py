"""The agent's multicast path, run by busybox sh on the host against a real server on loopback.

The QEMU test (tests/e2e/test_multicast_imaging.py) runs the whole agent on three guests. These
run its functions (``fetch_plan``, ``receive_multicast``, ``fetch``, ``verify_disk``) with the
host's busybox and the real C receiver, so each exit of ``ndmc-recv`` gets its own case: a clean
copy, missed ranges fetched by HTTP, and a join the server answers with unicast.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.agent_shell import (
    BUSYBOX,
    STANDINS,
    agent_functions,
    any_block_device,
    busybox_bin,
    run_script,
)
from tests.integration.conftest_boot import agent_credential
from tests.integration.mc_harness import running_server

SQL_N1 = "52:54:00:00:10:01"
# hold_mbr_now, is_zstd: verify_disk calls them (no stubs here, so hold_mbr_now does nothing);
# disk_target: what verify_disk compares the disk with
SHELL_FUNCTIONS = (
    "fetch_plan",
    "watch",
    "fetch",
    "receive_multicast",
    "hold_mbr_now",
    "is_zstd",
    "disk_target",
    "verify_disk",
)
APPLETS = [
    "awk",
    "cat",
    "cut",
    "dd",
    "head",
    "kill",
    "od",
    "rm",
    "sed",
    "sha256sum",
    "sleep",
    "tail",
    "timeout",
    "tr",
    "wc",
    "wget",
]

pytestmark = [
    pytest.mark.skipif(BUSYBOX is None, reason="needs busybox (Debian: busybox-static)"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build ndmc-recv"),
]


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory) -> Path:
    """busybox applets and the real C receiver, as the media has them in /bin."""
    path = busybox_bin(tmp_path_factory.mktemp("bin"), APPLETS)
    source = REPO / "bootfiles" / "agent" / "ndmc-recv.c"
    subprocess.run(["gcc", "-static", "-O2", "-o", path / "ndmc-recv", source], check=True)
    return path


async def run_agent(bin_dir: Path, tmp: Path, server, token: str, disk: Path, call: str) -> str:  # type: ignore[no-untyped-def]
    script = f"""{STANDINS}
SERVER={server.url}; MAC={SQL_N1}; API="$SERVER/api/nodes/$MAC"
AUTH="Authorization: Bearer {token}"; IP=127.0.0.1/8; DEV={any_block_device()}
{agent_functions(*SHELL_FUNCTIONS, tmp=tmp)}
fetch_plan || exit 9
ND_DISK={disk}
disk_target
{call}
"""
    return await run_script(bin_dir, script)


async def test_a_clean_multicast_copy_is_verified(bin_dir, tmp_path):
    async with running_server(tmp_path, max_wait=0.2) as server:
        disk = tmp_path / "disk.img"
        disk.write_bytes(b"\0" * (4 << 20))
        out = await run_agent(
            bin_dir, tmp_path, server, await agent_credential(server.url, SQL_N1), disk,
            'receive_multicast && verify_disk && echo "RESULT $HOW $SUM"',
        )  # fmt: skip
        assert "RESULT multicast session " in out and out.rstrip().endswith(server.sha256), out
        assert "missing byte ranges" not in out


async def test_missed_ranges_are_fetched_by_http_and_merged(bin_dir, tmp_path):
    """ndmc-recv exit 3 with a --missing list: what a dropped receiver gets. The receiver here
    is a stand-in that reports three holes; the fill is the agent's, against the real server."""
    stub = tmp_path / "stub-bin"
    stub.mkdir()
    for tool in bin_dir.iterdir():
        (stub / tool.name).symlink_to(tool)
    (stub / "ndmc-recv").unlink()
    holes = [(0, 99), (100_000, 100_099), (2_000_000, 2_099_999)]
    listed = "".join(f"{first} {last}\\n" for first, last in holes)  # printf's \\n
    (stub / "ndmc-recv").write_text(
        "#!/bin/sh\n"
        'while [ $# -gt 0 ]; do [ "$1" = --missing ] && out=$2; shift; done\n'
        f"printf '{listed}' > \"$out\"\n"
        "echo 'ndmc-recv: the session ended before the copy was complete' >&2\n"
        "exit 3\n"
    )
    (stub / "ndmc-recv").chmod(0o755)
    async with running_server(tmp_path, max_wait=0.2) as server:
        image = server.image_path.read_bytes()
        damaged = bytearray(image)
        for first, last in holes:
            damaged[first : last + 1] = bytes(last - first + 1)
        disk = tmp_path / "disk.img"
        disk.write_bytes(bytes(damaged))
        out = await run_agent(
            stub, tmp_path, server, await agent_credential(server.url, SQL_N1), disk,
            'receive_multicast && verify_disk && echo "RESULT $HOW"',
        )  # fmt: skip
        # the first two holes are less than 1 MiB apart: one request for both
        assert "multicast left 3 byte ranges; fetching them by HTTP (2 requests)" in out, out
        assert "RESULT multicast session" in out and "3 missing byte ranges by HTTP" in out, out
        assert disk.read_bytes()[: len(image)] == image


async def test_a_join_answered_with_unicast_falls_back_to_http(bin_dir, tmp_path):
    async with running_server(tmp_path, max_wait=0.2) as server:
        token = await agent_credential(server.url, SQL_N1)
        server.disable_multicast()
        disk = tmp_path / "disk.img"
        disk.write_bytes(b"")
        join = f"{server.url}/api/multicast/join?image=w2k3-ent-sp1&mac={SQL_N1}&format=args"
        out = await run_agent(
            bin_dir, tmp_path, server, token, disk,
            f'ND_MULTICAST="{join}"; receive_multicast; echo "RESULT $?"',
        )  # fmt: skip
        assert "the server answers unicast for this join: --unicast" in out, out
        assert out.rstrip().endswith("RESULT 1"), out
        assert disk.read_bytes() == b""  # nothing written: the HTTP path does the work
