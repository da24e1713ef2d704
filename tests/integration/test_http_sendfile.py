"""FileSender (netdeploy/http/sendfile.py) over real loopback TCP connections.

A bare asyncio server hands each accepted transport to the test; the client is an asyncio
stream. What is checked: the bytes arrive whole and in order, no sendfile(2) call sends more
than the slice, concurrent streams take turns, every byte the kernel took is counted, bytes
already queued in the transport go first, the socket is corked only while the body is sent,
and a gone peer, a short file, a closed transport and a cancel each end the send cleanly.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import pytest

from netdeploy.http.sendfile import FileSender

SLICE = 64 * 1024


class Accepted(asyncio.Protocol):
    def __init__(self, queue: asyncio.Queue[asyncio.Transport]):
        self.queue = queue

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.queue.put_nowait(transport)


class Server:
    def __init__(self) -> None:
        self.accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def connect(self) -> tuple[asyncio.Transport, asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return await self.accepted.get(), reader, writer


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    loop = asyncio.get_running_loop()
    s.server = await loop.create_server(lambda: Accepted(s.accepted), "127.0.0.1", 0)
    s.port = s.server.sockets[0].getsockname()[1]
    yield s
    s.server.close()
    await s.server.wait_closed()


def data_file(tmp_path: Path, size: int, name: str = "image.bin") -> IO[bytes]:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return open(path, "rb")  # closed by the test


def corked(transport: asyncio.Transport) -> int:
    sock = transport.get_extra_info("socket")
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)


async def test_sends_whole_file_in_slices_and_counts_every_byte(
    server: Server, tmp_path: Path
) -> None:
    size = 3 * 1024 * 1024 + 12345
    with data_file(tmp_path, size) as fh:
        transport, reader, writer = await server.connect()
        calls: list[int] = []
        reading = asyncio.ensure_future(reader.readexactly(size - 100))
        async with FileSender(transport, max_per_call=SLICE) as sender:
            assert corked(transport) == 1  # only full segments leave while the body is sent
            assert not transport.is_reading()
            sent = await sender.send(fh, 100, size - 100, calls.append)
        assert corked(transport) == 0
        assert transport.is_reading()
        received = await reading
        fh.seek(100)
        assert received == fh.read()
        assert sent == sum(calls) == size - 100
        assert max(calls) <= SLICE
        assert len(calls) >= (size - 100) // SLICE
        writer.close()
        transport.close()


async def test_concurrent_streams_take_turns(server: Server, tmp_path: Path) -> None:
    size = 8 * 1024 * 1024
    order: list[str] = []
    with data_file(tmp_path, size) as fh:
        links = [await server.connect() for _ in range(2)]

        async def stream(name: str, transport: asyncio.Transport) -> int:
            async with FileSender(transport, max_per_call=SLICE) as sender:
                return await sender.send(fh, 0, size, lambda n: order.append(name))

        readers = [asyncio.ensure_future(r.readexactly(size)) for _, r, _ in links]
        sent = await asyncio.gather(stream("a", links[0][0]), stream("b", links[1][0]))
        assert sent == [size, size]
        fh.seek(0)
        whole = fh.read()
        assert [await r for r in readers] == [whole, whole]
        # neither stream ran to its end before the other got going
        assert order.index("b") < len(order) - 1 - order[::-1].index("a")
        assert order.index("a") < len(order) - 1 - order[::-1].index("b")
        for transport, _, writer in links:
            writer.close()
            transport.close()


async def test_bytes_queued_in_the_transport_go_first(server: Server, tmp_path: Path) -> None:
    size = 1024 * 1024
    prefix = os.urandom(32 * 1024 * 1024)  # more than the socket takes: the rest stays queued
    with data_file(tmp_path, size) as fh:
        transport, reader, writer = await server.connect()
        transport.write(prefix)
        assert transport.get_write_buffer_size() > 0
        calls: list[int] = []
        reading = asyncio.ensure_future(reader.readexactly(len(prefix) + size))
        async with FileSender(transport, max_per_call=SLICE) as sender:
            assert await sender.send(fh, 0, size, calls.append) == size
        fh.seek(0)
        assert await reading == prefix + fh.read()
        assert sum(calls) == size
        writer.close()
        transport.close()


async def test_short_file_returns_what_it_had(server: Server, tmp_path: Path) -> None:
    with data_file(tmp_path, 100_000) as fh:
        transport, reader, writer = await server.connect()
        calls: list[int] = []
        async with FileSender(transport, max_per_call=SLICE) as sender:
            assert await sender.send(fh, 0, 200_000, calls.append) == 100_000
            assert await sender.send(fh, 100_000, 10, calls.append) == 0
        assert sum(calls) == 100_000
        assert len(await reader.readexactly(100_000)) == 100_000
        writer.close()
        transport.close()


async def test_gone_peer_raises_connection_error_and_the_count_covers_what_arrived(
    server: Server, tmp_path: Path
) -> None:
    size = 64 * 1024 * 1024
    with data_file(tmp_path, size) as fh:
        transport, reader, writer = await server.connect()
        calls: list[int] = []

        async def read_some_then_reset() -> int:
            got = len(await reader.readexactly(2 * 1024 * 1024))
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST: the server's next sendfile fails
            return got

        client = asyncio.ensure_future(read_some_then_reset())
        async with FileSender(transport, max_per_call=SLICE) as sender:
            with pytest.raises(ConnectionError):
                await sender.send(fh, 0, size, calls.append)
        received = await client
        assert received <= sum(calls) < size
        transport.close()


async def test_cancel_unregisters_and_closes_the_duplicate(server: Server, tmp_path: Path) -> None:
    size = 64 * 1024 * 1024
    with data_file(tmp_path, size) as fh:
        transport, _reader, writer = await server.connect()  # the client never reads
        fds = len(os.listdir("/proc/self/fd"))
        calls: list[int] = []

        async def send() -> int:
            async with FileSender(transport, max_per_call=SLICE) as sender:
                assert len(os.listdir("/proc/self/fd")) == fds + 1  # the duplicate
                return await sender.send(fh, 0, size, calls.append)

        task = asyncio.ensure_future(send())
        while sum(calls) == 0 or transport.get_extra_info("socket") is None:
            await asyncio.sleep(0.01)
        for _ in range(5):  # let it fill the socket buffers and wait for room
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(os.listdir("/proc/self/fd")) == fds
        assert 0 < sum(calls) < size
        assert transport.is_reading()
        writer.close()
        transport.close()


async def test_closed_transport_stops_the_send(server: Server, tmp_path: Path) -> None:
    size = 64 * 1024 * 1024
    with data_file(tmp_path, size) as fh:
        transport, reader, writer = await server.connect()
        calls: list[int] = []

        async def send() -> int:
            async with FileSender(transport, max_per_call=SLICE) as sender:
                return await sender.send(fh, 0, size, calls.append)

        task = asyncio.ensure_future(send())
        await reader.readexactly(SLICE)
        transport.close()  # (a server shutting down)
        with pytest.raises(ConnectionError):
            await task
        assert sum(calls) < size
        writer.close()


async def test_refuses_what_is_not_a_plain_tcp_transport() -> None:
    with pytest.raises(ConnectionResetError):
        FileSender(None)

    class Fake(asyncio.Transport):
        def get_extra_info(self, name: str, default: object = None) -> object:
            return default

        def is_closing(self) -> bool:
            return False

    with pytest.raises(NotImplementedError):
        FileSender(Fake())
    with pytest.raises(ValueError):
        FileSender(Fake(), max_per_call=0)


async def test_a_failing_count_callback_ends_the_send_with_its_error(
    server: Server, tmp_path: Path
) -> None:
    with data_file(tmp_path, 1024 * 1024) as fh:
        transport, _reader, writer = await server.connect()

        def sent(n: int) -> None:
            raise RuntimeError("accounting broke")

        async with FileSender(transport, max_per_call=SLICE) as sender:
            with pytest.raises(RuntimeError, match="accounting broke"):
                await sender.send(fh, 0, 1024 * 1024, sent)
        writer.close()
        transport.close()
