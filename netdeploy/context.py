"""What every part of the running server shares: frozen runtime facts and typed handles.

A leaf module. ``server.py`` (the one composition root) builds a :class:`Context` once, in
order, and hands it — or, better, one narrow callable taken from it — to each protocol
adapter. Nothing here is looked up by name: a reader sees what a module depends on from the
fields it touches. The handles are :class:`typing.Protocol` types, so this module imports no
service and every service may import it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from netdeploy.config import Config
from netdeploy.events import EventBus


class ServiceError(Exception):
    """A service cannot start; the message says why and what to do."""


class Refusal(Exception):
    """A request a service will not serve: ``status`` is the HTTP status the adapter answers
    with, the message says what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Ports:
    http: int
    tftp: int
    note: str = ""


class GateWaiters(Protocol):
    """Agents parked on their gate long-poll (``netdeploy.rollout.waiters.Waiters``)."""

    def register(self, mac: str) -> Any: ...
    def discard(self, mac: str, future: Any) -> None: ...
    def wake(self, mac: str, value: Any) -> int: ...
    def macs(self) -> list[str]: ...
    def __contains__(self, mac: str) -> bool: ...
    def __len__(self) -> int: ...


class RolloutWriter(Protocol):
    """The single writer of node state, tokens and gates (``netdeploy.rollout.engine``).

    ``run`` queues one action (``async def action(batch) -> result``) and returns once the
    batch holding it committed; refusals come back as ``RolloutError``.
    """

    waiters: GateWaiters

    def run(self, action: Callable[[Any], Awaitable[Any]], macs: Iterable[str] = ()) -> Any: ...
    async def stop(self) -> None: ...


class LiveConfig:
    """The running server's validated config: one handle, swapped whole on reload.

    The config is the source of truth (DESIGN); `netdeploy reload`, SIGHUP and `netdeploy
    adopt` make the running server re-read it. Readers take ``ctx.config`` once per request
    and use that object throughout, so a request never mixes two configs; the reloader
    (netdeploy.reload) is the only caller of :meth:`swap`.
    """

    __slots__ = ("_current",)

    def __init__(self, cfg: Config) -> None:
        self._current = cfg

    @property
    def current(self) -> Config:
        return self._current

    def swap(self, cfg: Config) -> Config:
        """Make ``cfg`` current; returns the one it replaces."""
        old, self._current = self._current, cfg
        return old


@dataclass(frozen=True)
class Context:
    """Built once by ``server.open_context``; never mutated, never a bag of services. Only
    the config behind ``live`` changes, and only as a whole (:class:`LiveConfig`)."""

    live: LiveConfig
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: EventBus
    ports: Ports
    public_url: str
    admin_token: str
    rollout: RolloutWriter
    # derives report tokens and the at-rest keys; <state_dir>/secret-key, 0600 (docs/security.md)
    secret_key: bytes

    @property
    def config(self) -> Config:
        """The config in force now (a reload swaps it whole)."""
        return self.live.current

    async def close(self) -> None:
        await self.rollout.stop()
        await self.engine.dispose()
