"""Hostile input: generated malformed packets, floods, truncation. Never a crash, never a leak."""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netdeploy.config import TftpConfig
from netdeploy.tftp.packets import ErrorCode, Op, parse_error
from tests.integration.conftest_tftp import (
    RawClient,
    make_root,
    plane,  # noqa: F401 (the fixture)
    tftp_server,
    threaded_server,
)

# every test runs on the C data plane and on the Python one
pytestmark = pytest.mark.usefixtures("plane")

SECRET = b"root:x:0:0"

names = st.one_of(
    st.sampled_from(["odd.bin", "../../etc/passwd", "/etc/passwd", "sub\\x", "", ".", "..", "sub"]),
    st.text(max_size=40).map(lambda t: t.replace("\0", "")),
)
option_words = st.sampled_from(["blksize", "tsize", "timeout", "windowsize", "BLKSIZE", "x"])
option_values = st.one_of(
    st.sampled_from(["0", "1", "7", "8", "65464", "65465", "70000", "-1", "", "abc", "1e3"]),
    st.text(max_size=8).map(lambda t: t.replace("\0", "")),
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """RRQ/WRQ-shaped packets with damage: missing NULs, odd modes, absurd or repeated options."""
    op = draw(st.sampled_from([1, 2, 1, 1]))
    fields = [draw(names), draw(st.sampled_from(["octet", "netascii", "mail", "OCTET", "", "x"]))]
    for _ in range(draw(st.integers(0, 4))):
        fields += [draw(option_words), draw(option_values)]
    body = b"\0".join(f.encode("utf-8", "surrogatepass") for f in fields)
    body += draw(st.sampled_from([b"\0", b"", b"\0\0", b"\0x"]))
    cut = draw(st.integers(0, len(body) + 2))
    return struct.pack("!H", op) + body[:cut]


packets_ = st.one_of(
    st.binary(max_size=700),  # noise, including oversized and empty
    requests(),
    st.builds(
        lambda op, rest: struct.pack("!H", op) + rest, st.integers(0, 65535), st.binary(max_size=20)
    ),
    st.binary(min_size=0, max_size=3),  # truncated headers
)


def test_thousands_of_malformed_packets_then_a_normal_transfer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_root(tmp_path)
    config = TftpConfig(timeout=0.2, retries=1, max_per_client=4)
    sent = 0
    with threaded_server(root, config) as server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0)

        @settings(
            max_examples=300,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(st.lists(packets_, min_size=4, max_size=6))
        def hammer(batch: list[bytes]) -> None:
            nonlocal sent
            for packet in batch:
                sock.sendto(packet, ("127.0.0.1", server.port))
                sent += 1
            while True:  # whatever comes back must never carry bytes from outside the root
                try:
                    reply = sock.recv(70000)
                except BlockingIOError:
                    return
                assert SECRET not in reply

        hammer()
        sock.close()
        assert sent >= 1000
        for _ in range(100):  # transfers the noise started time out (0.2 s, one retry)
            if server.active == 0:
                break
            time.sleep(0.05)
        # the server still serves a normal transfer, byte for byte
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(5)
        client.sendto(b"\0\x01odd.bin\0octet\0blksize\x001468\0", ("127.0.0.1", server.port))
        data, expected = bytearray(), 0
        while True:
            packet, tid = client.recvfrom(70000)
            if packet[:2] == b"\0\x06":
                client.sendto(b"\0\x04\0\0", tid)
                continue
            assert packet[:2] == b"\0\x03", packet
            number = struct.unpack("!H", packet[2:4])[0]
            if number == expected + 1:
                data += packet[4:]
                expected = number
            client.sendto(b"\0\x04" + packet[2:4], tid)
            if len(packet) < 1468 + 4:
                break
        client.close()
        assert bytes(data) == (root / "odd.bin").read_bytes()
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not crashes, crashes[0].getMessage()


async def test_garbage_at_a_transfer_port_does_not_disturb_it(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    async with tftp_server(root) as (server, finished):
        client, stranger = RawClient(server.port), RawClient(server.port)
        await client.rrq("exact512.bin")
        first, tid = await client.recv()
        for junk in (
            b"",
            b"\0",
            b"\0\x04",
            b"\xff" * 600,
            b"\0\x05\0\x01stop\0",
            b"\0\x04\xff\xff",
        ):
            await stranger.send(junk, tid)
        # the peer itself sends fragments and a stale ACK: ignored
        await client.send(b"\0", tid)
        await client.send(b"\0\x04\0\x00", tid)
        data = bytearray(first[4:])
        await client.ack(1, tid)
        while len(data) < 4 * 512:
            packet, _ = await client.recv()
            data += packet[4:]
            await client.ack(int.from_bytes(packet[2:4], "big"), tid)
        packet, _ = await client.recv()
        await client.ack(5, tid)
        assert bytes(data) == (root / "exact512.bin").read_bytes()
        assert (await finished.wait(1))[0].outcome == "ok"
        client.close()
        stranger.close()


async def test_rrq_flood_that_never_acks_is_reaped_and_others_still_boot(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    config = TftpConfig(timeout=0.2, retries=2, max_per_client=8, max_transfers=50)
    async with tftp_server(root, config, host="::") as (server, finished):
        flooders = [RawClient(server.port) for _ in range(100)]
        for flooder in flooders:
            await flooder.rrq("odd.bin", blksize=65464)
        assert server.active <= 8  # all from 127.0.0.1: the per-client limit holds
        # another client (::1 is another address) is served meanwhile
        other = RawClient(server.port, host="::1")
        assert await other.fetch("sub/nested.bin") == (root / "sub/nested.bin").read_bytes()
        other.close()
        await finished.wait(9, timeout=10)
        assert server.active == 0 and not server.per_client  # every flood session reaped
        assert {s.outcome for s in finished.items if s.client_ip == "127.0.0.1"} == {"timeout"}
        for flooder in flooders:
            flooder.close()


async def test_client_error_mid_transfer_frees_the_session(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    async with tftp_server(root) as (server, finished):
        client = RawClient(server.port)
        await client.rrq("odd.bin")
        _, tid = await client.recv()
        await client.ack(1, tid)
        await client.recv()
        await client.send(b"\0\x05\0\x03disk full\0", tid)
        stats = (await finished.wait(1))[0]
        assert stats.outcome == "aborted" and "disk full" in stats.message
        assert stats.message == "client sent error 3: disk full"  # the same on both planes
        assert server.active == 0
        assert await client.silent(0.3)  # never answer an ERROR
        client.close()


async def test_oversized_and_truncated_requests_get_error_4(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    async with tftp_server(root) as (server, _):
        client = RawClient(server.port)
        cases = [
            b"\0\x01" + b"a" * 600 + b"\0octet\0",  # over RFC 2347's 512 bytes
            b"\0\x01odd.bin",  # no NUL at all
            b"\0\x01odd.bin\0",  # no mode
            b"\0\x01odd.bin\0octet\0blksize\0",  # option without value
            b"\0\x01odd.bin\0mail\0",  # RFC 1350's mail mode: not served
            b"\0\x09\0\0",  # unknown opcode
        ]
        for packet in cases:
            await client.send(packet)
            reply, _ = await client.recv()
            err = parse_error(reply)
            assert err is not None and err[0] == ErrorCode.ILLEGAL_OPERATION, (packet, reply)
        await client.send(b"\0\x01odd.bin\0octet\0blksize\x00512\0BlkSize\x00512\0")
        err = parse_error((await client.recv())[0])
        assert err is not None and err[0] == ErrorCode.BAD_OPTIONS
        for fragment in (b"", b"\0", b"\0\x04\0", b"\0\x05\0\x01oops\0"):
            await client.send(fragment)
        assert await client.silent(0.3)  # fragments and errors get no answer
        await client.send(bytes([0, Op.ACK, 0, 1]))
        err = parse_error((await client.recv())[0])
        assert err is not None and err[0] == ErrorCode.ILLEGAL_OPERATION
        client.close()


async def test_unacked_flood_with_long_timeouts_cannot_lock_out_a_real_client(
    tmp_path: Path,
) -> None:
    """RRQs are spoofable: 200 requesters (each its own address) that never ACK and ask for
    timeout=255. They hold only the unACKed pool (the oldest reclaimed for newer requests),
    their timeout is not acknowledged, every one is dropped within the first-ACK budget, and
    a real client is served meanwhile."""
    root = make_root(tmp_path)
    config = TftpConfig(max_transfers=20, max_unacked=30, max_per_client=4, first_ack_budget=2)
    async with tftp_server(root, config, host="0.0.0.0") as (server, finished):
        flooders = [
            RawClient(server.port, host=f"127.0.{1 + i // 250}.{1 + i % 250}") for i in range(200)
        ]
        for flooder in flooders:
            await flooder.rrq("odd.bin", timeout=255, blksize=1468)
        oack, _ = await flooders[0].recv()
        assert oack.startswith(b"\0\x06") and b"blksize" in oack and b"timeout" not in oack
        assert len(server.unacked) <= 30 and server.active <= 30
        other = RawClient(server.port, host="127.0.9.9")
        assert await other.fetch("sub/nested.bin") == (root / "sub/nested.bin").read_bytes()
        other.close()
        # within the 2 s first-ACK budget every flood transfer is gone (RRQs that found the
        # pool full of transfers still opening were dropped silently, as over any limit)
        while server.active:
            await finished.wait(len(finished.items) + 1, timeout=10)
        outcomes = Counter(s.outcome for s in finished.items if s.client_ip != "127.0.9.9")
        assert set(outcomes) <= {"reclaimed", "timeout"} and outcomes["reclaimed"], outcomes
        assert [s.outcome for s in finished.items if s.client_ip == "127.0.9.9"] == ["ok"]
        assert not server.unacked and not server.per_client
        for flooder in flooders:
            flooder.close()
