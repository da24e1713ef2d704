"""Protocol behaviour real clients will not exercise, driven by a raw UDP client."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import pytest

from netdeploy.config import TftpConfig
from netdeploy.tftp.packets import ErrorCode, Op, parse_error
from tests.integration.conftest_tftp import (
    RawClient,
    make_root,
    options_of,
    plane,  # noqa: F401 (the fixture)
    tftp_server,
)

# every test runs on the C data plane and on the Python one
pytestmark = pytest.mark.usefixtures("plane")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path)


def op(packet: bytes) -> int:
    return int.from_bytes(packet[:2], "big")


def block(packet: bytes) -> int:
    return int.from_bytes(packet[2:4], "big")


async def test_options_are_negotiated_and_lowered_to_our_limits(root: Path) -> None:
    config = TftpConfig(max_blksize=1468, max_windowsize=8)
    async with tftp_server(root, config) as (server, _):
        client = RawClient(server.port)
        await client.rrq("odd.bin", blksize=70000, windowsize=64, tsize=0, timeout=3, x_y="z")
        packet, _ = await client.recv()
        assert op(packet) == Op.OACK
        # RFC 2348/7440: the server may answer smaller; unknown options are ignored (2347)
        assert options_of(packet) == {
            "blksize": "1468",
            "windowsize": "8",
            "tsize": str((root / "odd.bin").stat().st_size),
            "timeout": "3",
        }
        client.close()


async def test_no_known_options_means_no_oack(root: Path) -> None:
    async with tftp_server(root) as (server, _):
        client = RawClient(server.port)
        await client.rrq("one.bin", colour="blue")
        packet, _ = await client.recv()
        assert (op(packet), block(packet)) == (Op.DATA, 1)
        client.close()


@pytest.mark.parametrize(
    "options",
    [
        {"blksize": 0},
        {"blksize": 1},
        {"blksize": 7},
        {"blksize": "big"},
        {"windowsize": 0},
        {"windowsize": "-3"},
        {"tsize": "lots"},
        {"timeout": 0},
        {"timeout": 256},
        {"timeout": "1.5"},
    ],
)
async def test_absurd_options_get_error_8(root: Path, options: dict[str, object]) -> None:
    async with tftp_server(root) as (server, finished):
        client = RawClient(server.port)
        await client.rrq("odd.bin", **options)
        packet, _ = await client.recv()
        code, message = parse_error(packet) or (None, "")
        assert code == ErrorCode.BAD_OPTIONS, packet
        assert next(iter(options)) in message
        assert (await finished.wait(1))[0].outcome == "refused"
        client.close()


async def test_write_requests_are_refused_with_error_2(root: Path) -> None:
    async with tftp_server(root) as (server, _):
        client = RawClient(server.port)
        await client.send(b"\0\x02upload.bin\0octet\0")
        packet, _ = await client.recv()
        assert parse_error(packet) == (
            ErrorCode.ACCESS_VIOLATION,
            "read-only server: writes refused",
        )
        assert not (root / "upload.bin").exists()
        client.close()


async def test_nothing_outside_the_root(root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for clients")
    (root / "escape").symlink_to(secret)
    (root / "escape-dir").symlink_to(tmp_path)
    (root / "inside").symlink_to(root / "one.bin")
    os.mkfifo(root / "fifo")
    refused = {
        "../secret.txt": ErrorCode.ACCESS_VIOLATION,
        "sub/../../secret.txt": ErrorCode.ACCESS_VIOLATION,
        str(secret): ErrorCode.ACCESS_VIOLATION,
        "/one.bin": ErrorCode.ACCESS_VIOLATION,
        "sub\\nested.bin": ErrorCode.ACCESS_VIOLATION,
        "escape": ErrorCode.ACCESS_VIOLATION,
        "escape-dir/secret.txt": ErrorCode.ACCESS_VIOLATION,
        "one.bin\x01": ErrorCode.ACCESS_VIOLATION,
        "missing.bin": ErrorCode.NOT_FOUND,
        "sub": ErrorCode.NOT_FOUND,  # a directory is not a file
        "fifo": ErrorCode.NOT_FOUND,  # not a regular file, and never blocks the loop
    }
    async with tftp_server(root) as (server, _):
        client = RawClient(server.port)
        for name, code in refused.items():
            await client.rrq(name)
            packet, _ = await client.recv()
            err = parse_error(packet)
            assert err is not None and err[0] == code, (name, packet)
            assert b"not for clients" not in packet
        # NUL inside the name: the request's file name ends at the first NUL (RFC 1350)
        await client.send(b"\0\x01one.bin\0../secret.txt\0octet\0")
        packet, _ = await client.recv()
        assert op(packet) == Op.ERROR
        assert await client.fetch("inside") == (root / "one.bin").read_bytes()
        assert await client.fetch("./sub//nested.bin") == (root / "sub/nested.bin").read_bytes()
        client.close()


async def test_a_stranger_never_reaches_the_transfer_and_it_goes_on(root: Path) -> None:
    # The transfer socket is connected to the client's TID (RFC 1350 §4), as tftp-hpa's is:
    # the kernel keeps a stranger's datagrams from it (and answers them with ICMP port
    # unreachable), so a spoofed ACK or ERROR neither moves nor ends the transfer, and
    # the server sends nothing a spoofed source could have reflected at someone.
    async with tftp_server(root) as (server, finished):
        client, stranger = RawClient(server.port), RawClient(server.port)
        await client.rrq("odd.bin", blksize=1024)
        _, tid = await client.recv()
        await client.ack(0, tid)
        first, _ = await client.recv()
        assert block(first) == 1
        await stranger.ack(1, tid)  # right transfer port, wrong source port
        await stranger.send(b"\0\x05\0\x00stop\0", tid)  # an ERROR from the stranger
        assert await stranger.silent(0.3)
        data = bytearray(first[4:])
        await client.ack(1, tid)
        while True:
            packet, _ = await client.recv()
            data += packet[4:]
            await client.ack(block(packet), tid)
            if len(packet) < 1028:
                break
        assert bytes(data) == (root / "odd.bin").read_bytes()
        stats = (await finished.wait(1))[0]
        assert (stats.outcome, stats.retransmits) == ("ok", 0)
        client.close()
        stranger.close()


async def test_duplicate_ack_is_not_answered_sorcerers_apprentice(root: Path) -> None:
    async with tftp_server(root, TftpConfig(timeout=2.0)) as (server, finished):
        client = RawClient(server.port)
        await client.rrq("odd.bin")
        packet, tid = await client.recv()
        await client.ack(1, tid)
        packet, _ = await client.recv()
        assert block(packet) == 2
        await client.ack(1, tid)  # delayed duplicate of ACK 1
        await client.ack(1, tid)
        assert await client.silent(0.5), "a duplicate ACK must not trigger a retransmission"
        await client.send(b"\0\x05\0\0client gave up\0", tid)
        stats = (await finished.wait(1))[0]
        assert stats.outcome == "aborted" and stats.retransmits == 0 and stats.blocks == 2
        assert "client gave up" in stats.message
        client.close()


async def test_retransmission_backs_off_then_gives_up(root: Path) -> None:
    async with tftp_server(root, TftpConfig(timeout=0.3, retries=3)) as (server, finished):
        client = RawClient(server.port)
        loop = asyncio.get_running_loop()
        await client.rrq("odd.bin")
        arrivals = []
        while True:
            packet, _ = await client.recv(5)
            arrivals.append(loop.time())
            if op(packet) == Op.ERROR:
                break
            assert block(packet) == 1
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert len(gaps) == 4  # three retransmissions, then the error
        assert gaps[1] > 1.5 * gaps[0] and gaps[2] > 1.5 * gaps[1]  # doubling backoff
        stats = (await finished.wait(1))[0]
        assert (stats.outcome, stats.retransmits) == ("timeout", 3)
        assert stats.message == "no ACK after 3 retransmissions"  # the same words on both planes
        assert server.active == 0
        client.close()


async def test_lost_data_is_resent_after_timeout(root: Path) -> None:
    async with tftp_server(root, TftpConfig(timeout=0.2)) as (server, finished):
        client = RawClient(server.port)
        await client.rrq("exact512.bin")
        packet, tid = await client.recv()
        again, _ = await client.recv()  # we "lost" it: the timer sends block 1 again
        assert packet == again
        data = bytearray(packet[4:])
        await client.ack(1, tid)
        while len(data) < 4 * 512:
            packet, _ = await client.recv()
            data += packet[4:]
            await client.ack(block(packet), tid)
        last, _ = await client.recv()
        assert (block(last), len(last)) == (5, 4)  # exact multiple: an empty final block
        await client.ack(5, tid)
        assert bytes(data) == (root / "exact512.bin").read_bytes()
        assert (await finished.wait(1))[0].retransmits == 1
        client.close()


async def test_window_gap_resends_from_the_acked_block(root: Path) -> None:
    async with tftp_server(root) as (server, _):
        client = RawClient(server.port)
        await client.rrq("odd.bin", blksize=512, windowsize=4)
        _, tid = await client.recv()
        await client.ack(0, tid)
        window = [block((await client.recv())[0]) for _ in range(4)]
        assert window == [1, 2, 3, 4]
        await client.ack(2, tid)  # RFC 7440 §4: "I have 1-2", block 3 was lost
        window = [block((await client.recv())[0]) for _ in range(4)]
        assert window == [3, 4, 5, 6]
        client.close()


async def test_unexpected_opcode_from_the_client_ends_the_transfer(root: Path) -> None:
    async with tftp_server(root) as (server, finished):
        client = RawClient(server.port)
        await client.rrq("odd.bin")
        _, tid = await client.recv()
        await client.send(b"\0\x03\0\x01data?", tid)
        packet, _ = await client.recv()
        assert parse_error(packet) is not None
        assert parse_error(packet)[0] == ErrorCode.ILLEGAL_OPERATION  # type: ignore[index]
        assert (await finished.wait(1))[0].outcome == "error"
        client.close()


async def test_retransmitted_rrq_starts_no_second_transfer(root: Path) -> None:
    async with tftp_server(root, TftpConfig(timeout=2.0)) as (server, _):
        client = RawClient(server.port)
        await client.rrq("one.bin")
        await client.rrq("one.bin")
        await client.recv()
        assert await client.silent(0.4)
        assert server.active == 1
        client.close()


async def test_a_client_reusing_its_port_gets_each_next_request_at_once(root: Path) -> None:
    """tftp-hpa's client keeps one socket for a session: its last ACK and its next RRQ come
    back to back, and the RRQ must start a new transfer, not be taken for a retransmission
    of the one that just ended. RawClient never retransmits an RRQ, so a request taken for
    a duplicate would time out here (it did, on a data plane that read the ACK late)."""
    names = ["one.bin", "exact512.bin", "sub/nested.bin", "empty.bin"] * 5
    async with tftp_server(root) as (server, finished):
        client = RawClient(server.port)
        for name in names:
            assert await client.fetch(name, blksize=512) == (root / name).read_bytes()
        stats = await finished.wait(len(names))
        client.close()
    assert [s.filename for s in stats] == names
    assert {s.outcome for s in stats} == {"ok"}


async def test_limits_hold_requests_silently_until_a_slot_frees(root: Path) -> None:
    config = TftpConfig(max_per_client=2, max_transfers=3, timeout=0.2, retries=1)
    async with tftp_server(root, config) as (server, finished):
        clients = [RawClient(server.port) for _ in range(3)]
        for client in clients:
            await client.rrq("odd.bin")
        assert [op((await c.recv())[0]) for c in clients[:2]] == [Op.DATA, Op.DATA]
        assert await clients[2].silent(0.1), "over the per-client limit: silence, not error"
        assert server.active == 2
        await finished.wait(2, timeout=5)  # both vanish: reaped after the retry budget
        assert server.active == 0
        assert await clients[2].fetch("one.bin") == (root / "one.bin").read_bytes()
        for client in clients:
            client.close()


async def test_virtual_files_come_from_the_resolver_first(root: Path) -> None:
    asked: list[tuple[str, str]] = []

    async def resolver(path: str, client_ip: str) -> bytes | None:
        asked.append((path, client_ip))
        return b"#!ipxe\nchain http://x/boot\n" if path.startswith("pxelinux.cfg/") else None

    async with tftp_server(root, resolver=resolver) as (server, finished):
        client = RawClient(server.port)
        name = "pxelinux.cfg/01-52-54-00-00-10-01"
        assert await client.fetch(name, tsize=0) == b"#!ipxe\nchain http://x/boot\n"
        assert await client.fetch("one.bin") == (root / "one.bin").read_bytes()
        await client.rrq("../etc/passwd")
        await client.recv()
        stats = await finished.wait(3)
        client.close()
    # every valid RRQ asks the resolver, with the cleaned name; refused names never reach it
    assert asked == [(name, "127.0.0.1"), ("one.bin", "127.0.0.1")]
    assert [s.virtual for s in stats] == [True, False, False]
