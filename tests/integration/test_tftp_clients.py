"""Real TFTP clients (curl, atftp, tftp-hpa) against the engine; every byte compared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netdeploy.config import TftpConfig
from tests.integration.conftest_tftp import (
    make_root,
    need,
    plane,  # noqa: F401 (the fixture)
    run,
    tftp_server,
)

# every test runs on the C data plane and on the Python one
pytestmark = pytest.mark.usefixtures("plane")

# curl 7.88 fails on a zero-byte file with any server (in.tftpd too: "getpeername() failed"),
# so empty.bin is fetched with atftp and tftp-hpa only.
FILES = ["one.bin", "exact512.bin", "exact1468.bin", "odd.bin", "sub/nested.bin"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path)


@pytest.mark.parametrize("blksize", [512, 1468, 8192, 65464])
async def test_curl_every_blksize(root: Path, tmp_path: Path, blksize: int) -> None:
    curl = need("curl")
    async with tftp_server(root) as (server, finished):
        for name in FILES:
            out = tmp_path / "out"
            url = f"tftp://127.0.0.1:{server.port}/{name}"
            rc, text = await run(curl, "-sS", "--tftp-blksize", str(blksize), "-o", str(out), url)
            assert rc == 0, text
            assert out.read_bytes() == (root / name).read_bytes(), name
        stats = await finished.wait(len(FILES))
    assert [s.outcome for s in stats] == ["ok"] * len(FILES)
    # curl asks for blksize only when it differs from 512 (curl's tftp.c)
    assert {s.blksize for s in stats} == {blksize}


async def test_curl_ipv4_and_ipv6_on_one_dual_stack_server(root: Path, tmp_path: Path) -> None:
    curl = need("curl")
    async with tftp_server(root, host="::") as (server, finished):
        for host in ("127.0.0.1", "[::1]"):
            out = tmp_path / "out"
            url = f"tftp://{host}:{server.port}/odd.bin"
            rc, text = await run(curl, "-sS", "-o", str(out), url)
            assert rc == 0, text
            assert out.read_bytes() == (root / "odd.bin").read_bytes()
        stats = await finished.wait(2)
    assert [s.client_ip for s in stats] == ["127.0.0.1", "::1"]


@pytest.mark.parametrize("window", [1, 4, 16])
async def test_atftp_windowsize(root: Path, tmp_path: Path, window: int) -> None:
    atftp = need("atftp")
    async with tftp_server(root) as (server, finished):
        for name in ("odd.bin", "exact1468.bin", "empty.bin"):  # empty: one empty DATA
            out = tmp_path / "out"
            argv = [atftp, "--option", f"windowsize {window}", "--option", "blksize 1468"]
            argv += ["--option", "tsize", "-g", "-r", name, "-l", str(out)]
            rc, text = await run(*argv, "127.0.0.1", str(server.port))
            assert rc == 0, text
            assert out.read_bytes() == (root / name).read_bytes(), name
        stats = await finished.wait(3)
    assert {(s.windowsize, s.blksize, s.outcome) for s in stats} == {(window, 1468, "ok")}


async def test_tftp_hpa_binary_and_netascii(root: Path, tmp_path: Path) -> None:
    tftp = need("tftp")
    async with tftp_server(root) as (server, _):
        for name in ("odd.bin", "empty.bin", "exact512.bin"):
            out = tmp_path / "binary.out"
            argv = [tftp, "-m", "binary", "127.0.0.1", str(server.port), "-c", "get", name]
            rc, text = await run(*argv, str(out))
            assert rc == 0 and out.read_bytes() == (root / name).read_bytes(), text
        # netascii: the server sends CR LF / CR NUL (RFC 1350); tftp-hpa turns them back.
        out = tmp_path / "text.out"
        rc, text = await run(
            tftp, "-m", "ascii", "127.0.0.1", str(server.port), "-c", "get", "text.txt", str(out)
        )
        assert rc == 0, text
        assert out.read_bytes() == (root / "text.txt").read_bytes()


async def test_block_number_rollover_past_32_mib(tmp_path: Path) -> None:
    """65536+ blocks of 512 bytes: lockstep (curl) and windowed (atftp) roll over cleanly."""
    curl, atftp = need("curl"), need("atftp")
    root = tmp_path / "root"
    root.mkdir()
    big = os.urandom((1 << 25) + 3000)  # 32 MiB + a bit: 65542 blocks
    (root / "big.bin").write_bytes(big)
    async with tftp_server(root, TftpConfig(max_windowsize=16)) as (server, finished):
        out = tmp_path / "curl.out"
        rc, text = await run(curl, "-sS", "-o", str(out), f"tftp://127.0.0.1:{server.port}/big.bin")
        assert rc == 0, text
        assert out.read_bytes() == big
        out = tmp_path / "atftp.out"
        argv = [atftp, "--option", "windowsize 16", "-g", "-r", "big.bin", "-l", str(out)]
        rc, text = await run(*argv, "127.0.0.1", str(server.port))
        assert rc == 0, text
        assert out.read_bytes() == big
        stats = await finished.wait(2)
    assert all(s.blocks == len(big) // 512 + 1 and s.outcome == "ok" for s in stats)


async def test_curl_sees_errors_as_errors(root: Path, tmp_path: Path) -> None:
    curl = need("curl")
    async with tftp_server(root) as (server, _):
        # curl's exit codes: 68 = TFTP error 1 (not found), 69 = error 2 (access violation)
        for name, rc_expected in (("missing.bin", 68), ("sub/../../etc/passwd", 69)):
            url = f"tftp://127.0.0.1:{server.port}/{name}"
            rc, text = await run(curl, "-sS", "--path-as-is", "-o", str(tmp_path / "x"), url)
            assert rc == rc_expected, text
