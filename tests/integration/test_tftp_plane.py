"""The data plane: one private epoll dispatching many transfer sockets."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from netdeploy.tftp.plane import DataPlane


async def test_one_wake_up_serves_every_ready_socket_and_a_failing_one_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    plane = DataPlane(loop)
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(3)]
    heard: list[int] = []
    done = asyncio.Event()

    def reader(i: int, sock: socket.socket):  # type: ignore[no-untyped-def]
        def readable() -> None:
            sock.recv(16)
            if i == 0:
                raise RuntimeError("a transfer's bug")
            heard.append(i)
            if len(heard) == 2:
                done.set()

        return readable

    try:
        for i, (ours, _) in enumerate(pairs):
            ours.setblocking(False)
            plane.watch(ours.fileno(), reader(i, ours))
        for _, theirs in pairs:
            theirs.send(b"ack")
        with caplog.at_level(logging.ERROR, logger="netdeploy.tftp"):
            await asyncio.wait_for(done.wait(), 5)
        assert sorted(heard) == [1, 2]
        assert "failed" in caplog.text
        assert pairs[0][0].fileno() not in plane.ready_for  # dropped, the others kept
        pairs[1][1].send(b"again")
        done.clear()
        heard.clear()
        pairs[2][1].send(b"again")
        await asyncio.wait_for(done.wait(), 5)
        plane.unwatch(pairs[1][0].fileno())
        plane.unwatch(pairs[1][0].fileno())  # twice is harmless (a transfer ends once)
    finally:
        plane.close()
        for a, b in pairs:
            a.close()
            b.close()
