"""The running server re-reads its config: `netdeploy reload`, SIGHUP and `netdeploy adopt`.

The config is the source of truth and the running server owns the store (DESIGN, "Seams that
must hold"). So an edit — by hand, or the inventory file `netdeploy adopt` writes — reaches
the store one way only: the server reads the whole config again, runs every check `netdeploy
check` runs (paths, templates, answer files, reported hardware against its profile), and only
if all pass applies it through the rollout writer in one transaction
(:func:`netdeploy.rollout.inventory.import_action`) and swaps the live config
(:class:`netdeploy.context.LiveConfig`). An invalid config changes nothing: not the store, not
the config in force, not the inventory directory.

Adopting writes one file per node, ``<inventory dir>/<hostname>.toml``, where the inventory
dir is the directory of the config's first ``include`` glob (e.g. ``nodes.d/*.toml``): first
to a temporary name, validated together with the rest of the config, then renamed into place
(atomic on POSIX) and reloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from netdeploy import eventlog
from netdeploy.boot.check import check_config
from netdeploy.config import Config, ConfigError, NodeConfig, load_config
from netdeploy.context import Context
from netdeploy.inventory import NodeState
from netdeploy.rollout.inventory import ImportResult, import_action
from netdeploy.store.models import MachineFacts, Node, utcnow

log = logging.getLogger("netdeploy.reload")

# Sections the running services read once at start (sockets, ports, sessions): a reload that
# changes them would leave the server running the old values while claiming the new.
RESTART_SECTIONS = ("server", "tftp", "http", "dashboard", "rollout", "multicast", "dhcp")


class ReloadRefused(Exception):
    """Nothing changed; ``status`` is the HTTP status, ``problems`` one line each."""

    def __init__(self, status: int, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.problems = problems or []


@dataclass
class ReloadResult:
    source: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    file: str | None = None  # the inventory file adopt wrote

    def json(self) -> dict[str, Any]:
        return {
            "applied": True,
            "source": self.source,
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "file": self.file,
        }


def inventory_dir(cfg: Config) -> tuple[Path, str]:
    """Where adopt writes: the directory of the first ``include`` glob, and that glob's name
    part (the file adopt writes must match it, or the next reload would not read it)."""
    if not cfg.include or cfg.source is None:
        raise ReloadRefused(
            409,
            f'the config includes no inventory files: add include = ["nodes.d/*.toml"] to '
            f"{cfg.source} (adopt writes one file per node there), then `netdeploy reload`",
        )
    pattern = Path(cfg.include[0])
    if any(c in str(pattern.parent) for c in "*?["):
        raise ReloadRefused(
            409, f"include {cfg.include[0]!r}: adopt needs a plain directory, e.g. nodes.d/*.toml"
        )
    return (cfg.source.parent / pattern.parent).resolve(), pattern.name


def node_entry(
    mac: str,
    hostname: str,
    *,
    cluster: str | None,
    image: str | None,
    hardware: str | None,
    actor: str,
) -> str:
    """One ``[[nodes]]`` entry as TOML (JSON string escapes are valid TOML basic strings)."""
    lines = [
        f"# adopted by {actor} at {utcnow().isoformat(timespec='seconds')}",
        "[[nodes]]",
        f"mac = {json.dumps(mac)}",
        f"hostname = {json.dumps(hostname)}",
    ]
    for key, value in (("cluster", cluster), ("image", image), ("hardware", hardware)):
        if value is not None:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def _restart_changes(old: Config, new: Config) -> list[str]:
    return [
        f"[{name}] changed: it takes effect at the next restart of netdeploy serve; "
        "restart, or undo that change to reload the rest"
        for name in RESTART_SECTIONS
        if getattr(old, name) != getattr(new, name)
    ]


class Reloader:
    """Re-reads and applies the config, one reload at a time (built by the composition root)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.lock = asyncio.Lock()

    async def _facts(self) -> dict[str, dict[str, Any]]:
        async with self.ctx.sessions() as session:
            rows = (await session.scalars(select(MachineFacts))).all()
        return {row.mac: dict(row.facts) for row in rows}

    async def _validated(self, extra: tuple[Path, ...] = ()) -> Config:
        old = self.ctx.config
        try:
            new = await asyncio.to_thread(
                load_config, old.source, extra_includes=extra, **old.overrides
            )
        except ConfigError as exc:
            raise ReloadRefused(
                422, "the config is not valid; nothing changed", [str(p) for p in exc.problems]
            ) from None
        problems = _restart_changes(old, new)
        problems += await asyncio.to_thread(check_config, new, await self._facts())
        if problems:
            raise ReloadRefused(
                422, "the config does not pass `netdeploy check`; nothing changed", problems
            )
        return new

    async def _apply(self, new: Config) -> ImportResult:
        """Swap the live config and import it in one writer transaction; on any error put the
        old config back (the transaction rolled back, so the store is unchanged too)."""
        old = self.ctx.live.swap(new)
        try:
            result: ImportResult = await self.ctx.rollout.run(import_action(new), exclusive=True)
        except BaseException:
            self.ctx.live.swap(old)
            raise
        return result

    async def _record_refusal(self, actor: str, exc: ReloadRefused) -> None:
        event = eventlog.reload(
            {"refused": str(exc), "problems": exc.problems[:20], "actor": actor}
        )
        async with self.ctx.sessions() as session, session.begin():
            session.add(event)
        self.ctx.bus.publish(event)

    async def reload(self, actor: str) -> ReloadResult:
        """Validate the config on disk and apply it; :class:`ReloadRefused` changes nothing."""
        async with self.lock:
            try:
                new = await self._validated()
            except ReloadRefused as exc:
                await self._record_refusal(actor, exc)
                raise
            result = await self._apply(new)
        log.info(
            "config reloaded by %s: %d added, %d updated, %d removed",
            actor,
            len(result.added),
            len(result.updated),
            len(result.removed),
        )
        return ReloadResult(str(new.source), result.added, result.updated, result.removed)

    async def adopt(
        self,
        mac: str,
        hostname: str,
        *,
        cluster: str | None = None,
        image: str | None = None,
        hardware: str | None = None,
        actor: str,
    ) -> ReloadResult:
        """Write a validated ``[[nodes]]`` entry for a discovered machine and reload."""
        if (cluster is None) == (image is None):
            raise ReloadRefused(400, "give a cluster or an image (one of them)")
        try:  # before the host name goes into a file name: "../x" must never get that far
            NodeConfig(mac=mac, hostname=hostname, cluster=cluster, image=image, hardware=hardware)
        except ValidationError as exc:
            problems = [e["msg"].removeprefix("Value error, ") for e in exc.errors()]
            raise ReloadRefused(400, "; ".join(problems)) from None
        async with self.lock:
            try:
                result = await self._adopt(mac, hostname, cluster, image, hardware, actor)
            except ReloadRefused as exc:
                await self._record_refusal(actor, exc)
                raise
        log.info("adopted %s as %s (%s) by %s", mac, hostname, result.file, actor)
        return result

    async def _adopt(
        self,
        mac: str,
        hostname: str,
        cluster: str | None,
        image: str | None,
        hardware: str | None,
        actor: str,
    ) -> ReloadResult:
        cfg = self.ctx.config
        if (known := cfg.node_by_mac(mac)) is not None:
            raise ReloadRefused(409, f"{mac} is already in the config as {known.hostname}")
        async with self.ctx.sessions() as session:
            row = await session.get(Node, mac)
        if row is None or row.state != NodeState.DISCOVERED:
            raise ReloadRefused(
                404,
                f"no discovered machine with MAC {mac}: PXE-boot it first (it is listed as "
                "discovered), or add it to the config by hand and `netdeploy reload`",
            )
        directory, pattern = inventory_dir(cfg)
        name = f"{hostname}.toml"
        if not fnmatch.fnmatch(name, pattern):
            raise ReloadRefused(409, f"include {cfg.include[0]!r} would not read {name}")
        target = directory / name
        if target.exists():
            raise ReloadRefused(409, f"{target} exists already; choose another host name")
        directory.mkdir(parents=True, exist_ok=True)
        text = node_entry(
            mac, hostname, cluster=cluster, image=image, hardware=hardware, actor=actor
        )
        temporary = directory / f".{name}.adopt-{os.getpid()}"
        await asyncio.to_thread(_write_synced, temporary, text)
        try:
            await self._validated((temporary,))
            os.replace(temporary, target)  # atomic: the next reader sees all of it or nothing
        except ReloadRefused as exc:  # name the file as it would be, not its temporary name
            exc.problems = [p.replace(str(temporary), str(target)) for p in exc.problems]
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        try:
            new = await self._validated()
            result = await self._apply(new)
        except BaseException:
            target.unlink(missing_ok=True)  # changes nothing: not even the inventory dir
            raise
        return ReloadResult(
            str(new.source), result.added, result.updated, result.removed, str(target)
        )


def _write_synced(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
