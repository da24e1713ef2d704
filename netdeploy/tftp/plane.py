"""The data plane: every transfer socket in one private epoll, watched by the loop as one fd.

With ``add_reader`` per socket, asyncio wraps every ready socket of every wake-up in a Handle
and runs it through its ready queue. Here the loop sees one descriptor (the epoll), and one
wake-up hands every ready transfer its datagrams directly: in a boot storm hundreds of
sockets are served per wake-up for the cost of one Handle (measured in
docs/decisions/0013-tftp-data-plane-and-workers.md). Level-triggered: a transfer that leaves
datagrams queued (its DRAIN share is used up) keeps the epoll readable, so the loop comes
back to it after serving everyone else.
"""

from __future__ import annotations

import asyncio
import logging
import select
from collections.abc import Callable

log = logging.getLogger("netdeploy.tftp")

MAX_EVENTS = 1024  # ready sockets taken per wake-up


class DataPlane:
    """Dispatches readiness of many sockets from one epoll; Linux only (see :func:`open_plane`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.epoll = select.epoll()
        self.ready_for: dict[int, Callable[[], None]] = {}
        loop.add_reader(self.epoll.fileno(), self._wake)

    def watch(self, fd: int, readable: Callable[[], None]) -> None:
        self.epoll.register(fd, select.EPOLLIN)
        self.ready_for[fd] = readable

    def unwatch(self, fd: int) -> None:
        if self.ready_for.pop(fd, None) is not None:
            self.epoll.unregister(fd)

    def _wake(self) -> None:
        ready_for = self.ready_for
        for fd, _ in self.epoll.poll(0, MAX_EVENTS):
            readable = ready_for.get(fd)
            if readable is None:  # (unwatched by an earlier transfer of this batch)
                continue
            try:
                readable()
            except Exception:  # one transfer's bug must not stop the others' packets
                log.exception("TFTP transfer on descriptor %d failed", fd)
                self.unwatch(fd)

    def close(self) -> None:
        self.loop.remove_reader(self.epoll.fileno())
        self.epoll.close()
        self.ready_for.clear()


def open_plane(loop: asyncio.AbstractEventLoop) -> DataPlane | None:
    """A data plane where the kernel has epoll, else None (the loop watches each socket)."""
    if not hasattr(select, "epoll"):
        return None
    return DataPlane(loop)
