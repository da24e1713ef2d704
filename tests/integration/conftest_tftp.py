"""Helpers for the TFTP tests: a real server on loopback, a raw client, real client runners."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from netdeploy.config import TftpConfig
from netdeploy.tftp import engine, native
from netdeploy.tftp.engine import Resolver, TftpServer
from netdeploy.tftp.packets import Op
from netdeploy.tftp.transfer import TransferStats


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (tests/debian-packages.txt lists its package)")
    return path


@pytest.fixture(params=["native", "python"])
def plane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on each data plane: the C one (decision 0021) and the Python one that
    serves builds without a compiler. Use with ``pytestmark = pytest.mark.usefixtures("plane")``.
    """
    if request.param == "native":
        if not native.AVAILABLE:
            pytest.skip("netdeploy.tftp._native was not built (needs gcc and Python's headers)")
    else:
        monkeypatch.setattr(engine, "open_native", lambda *args: None)
    return str(request.param)


def make_root(tmp: Path) -> Path:
    """A boot-files root with files of awkward sizes (empty, exact block multiples, odd)."""
    root = tmp / "root"
    (root / "sub").mkdir(parents=True)
    rnd = os.urandom
    (root / "empty.bin").write_bytes(b"")
    (root / "one.bin").write_bytes(rnd(1))
    (root / "exact512.bin").write_bytes(rnd(512 * 4))
    (root / "exact1468.bin").write_bytes(rnd(1468 * 3))
    (root / "odd.bin").write_bytes(rnd(700_001))
    (root / "sub" / "nested.bin").write_bytes(rnd(5000))
    (root / "text.txt").write_bytes(b"first line\nsecond\r\nbare\rcr\n\nlast")
    return root


class Finished:
    """Collects TransferStats; ``wait(n)`` waits until ``n`` transfers ended."""

    def __init__(self) -> None:
        self.items: list[TransferStats] = []
        self._changed = asyncio.Event()

    def __call__(self, stats: TransferStats) -> None:
        self.items.append(stats)
        self._changed.set()

    async def wait(self, n: int = 1, timeout: float = 20.0) -> list[TransferStats]:
        async with asyncio.timeout(timeout):
            while len(self.items) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.items


@contextlib.asynccontextmanager
async def tftp_server(
    root: Path,
    config: TftpConfig | None = None,
    resolver: Resolver | None = None,
    host: str = "127.0.0.1",
) -> AsyncIterator[tuple[TftpServer, Finished]]:
    finished = Finished()
    server = TftpServer(root, config, resolver=resolver, on_finished=finished)
    await server.start(host, 0)
    try:
        yield server, finished
    finally:
        await server.stop()


class RawClient:
    """A bare UDP socket speaking TFTP by hand, for what real clients will not do."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.server = (host, port)
        self.loop = asyncio.get_running_loop()

    def close(self) -> None:
        self.sock.close()

    async def send(self, packet: bytes, addr: tuple[str, int] | None = None) -> None:
        await self.loop.sock_sendto(self.sock, packet, addr or self.server)

    async def rrq(self, name: str, mode: str = "octet", **options: object) -> None:
        body = name.encode() + b"\0" + mode.encode() + b"\0"
        for key, value in options.items():
            body += key.encode() + b"\0" + str(value).encode() + b"\0"
        await self.send(Op.RRQ.to_bytes(2, "big") + body)

    async def recv(self, timeout: float = 3.0) -> tuple[bytes, tuple[str, int]]:
        async with asyncio.timeout(timeout):
            packet, addr = await self.loop.sock_recvfrom(self.sock, 70000)
        return packet, addr

    async def silent(self, seconds: float) -> bool:
        """True when nothing arrives for ``seconds``."""
        try:
            await self.recv(seconds)
        except TimeoutError:
            return True
        return False

    async def ack(self, block: int, addr: tuple[str, int]) -> None:
        await self.send(bytes([0, Op.ACK]) + (block & 0xFFFF).to_bytes(2, "big"), addr)

    async def fetch(self, name: str, **options: object) -> bytes:
        """A complete lockstep read (the options' OACK acknowledged with ACK 0)."""
        await self.rrq(name, **options)
        blksize, out, expected = 512, bytearray(), 1
        while True:
            packet, addr = await self.recv()
            op = int.from_bytes(packet[:2], "big")
            if op == Op.OACK:
                fields = packet[2:].split(b"\0")
                blksize = int(
                    dict(zip(fields[::2], fields[1::2], strict=False)).get(b"blksize", 512)
                )
                await self.ack(0, addr)
                continue
            assert op == Op.DATA, packet
            block = int.from_bytes(packet[2:4], "big")
            await self.ack(block, addr)
            if block == expected & 0xFFFF:
                out += packet[4:]
                expected += 1
                if len(packet) - 4 < blksize:
                    return bytes(out)


def options_of(oack: bytes) -> dict[str, str]:
    fields = oack[2:].split(b"\0")[:-1]
    return {k.decode(): v.decode() for k, v in zip(fields[::2], fields[1::2], strict=False)}


async def run(*argv: str, cwd: Path | None = None, timeout: float = 60.0) -> tuple[int, str]:
    """Run a real client without blocking the server's event loop."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


@contextlib.contextmanager
def threaded_server(root: Path, config: TftpConfig | None = None) -> Iterator[TftpServer]:
    """A server on its own loop in a thread, for synchronous (hypothesis) tests."""
    loop = asyncio.new_event_loop()
    server = TftpServer(root, config)
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start("127.0.0.1", 0))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
