"""Connection limits the HTTP server holds whatever the clients do.

- **Per address**: one client address keeps at most ``[http] max_connections_per_address``
  connections open. One more is answered ``503`` with ``Retry-After`` and closed at once, so
  one host (or a script) cannot use up the server's descriptors and lock out a rack.
- **Slow heads and idle keep-alives**: aiohttp closes a connection whose handler waits for a
  request for ``keepalive_timeout`` seconds, from the moment it connects and after every
  response; a client that drips its request head byte by byte is such a connection, so
  ``[http] keepalive_timeout`` bounds both (``server.py`` passes it to the runner).
- **Slow bodies**: ``http/errors.py`` reads every body within ``[http] body_timeout``.

:class:`GuardedSite` is aiohttp's ``TCPSite`` with each connection's protocol wrapped in a
:class:`_Guard` that counts connections per address before aiohttp sees them.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from aiohttp import web
from prometheus_client import Counter as MetricCounter

REFUSED = MetricCounter(
    "netdeploy_http_connections_refused",
    "HTTP connections refused because their address had too many open",
)
RETRY_AFTER = 5


class ConnectionLimiter:
    """Open connections per client address."""

    def __init__(self, per_address: int) -> None:
        self.per_address = per_address
        self.open: Counter[str] = Counter()

    def enter(self, address: str) -> bool:
        if self.open[address] >= self.per_address:
            return False
        self.open[address] += 1
        return True

    def leave(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]


def _refusal(per_address: int) -> bytes:
    body = json.dumps(
        {
            "error": f"this address has {per_address} connections open "
            "([http] max_connections_per_address); close some and retry",
            "retry_after": RETRY_AFTER,
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Retry-After: {RETRY_AFTER}\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Guard(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the per-address count."""

    def __init__(self, inner: Any, limiter: ConnectionLimiter) -> None:
        self.inner = inner
        self.limiter = limiter
        self.address: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else "?"
        if not self.limiter.enter(address):
            REFUSED.inc()
            assert isinstance(transport, asyncio.Transport)
            transport.write(_refusal(self.limiter.per_address))
            transport.close()
            return
        self.address = address
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.address is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.address is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.address is not None:
            self.limiter.leave(self.address)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.address is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.address is not None:
            self.inner.resume_writing()


class GuardedSite(web.TCPSite):
    """``TCPSite`` whose connections pass the per-address limit first."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, per_address: int,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(runner, host, port, **kwargs)
        self.limiter = ConnectionLimiter(per_address)

    async def start(self) -> None:
        await web.BaseSite.start(self)  # (what TCPSite.start does, with the factory wrapped)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            lambda: _Guard(server(), self.limiter),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
