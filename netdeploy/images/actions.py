"""Catalog actions behind `netdeploy image add|verify|rm`: check, hash, place, record.

The config declares every image (``[images.NAME] file = ...``, relative to ``server.images_dir``);
`image add NAME PATH` is how the admin vouches for the bytes: it refuses names the config does
not declare, places PATH at the configured location (in place when it already is that file,
else a hard link, else a copy; zstd-compressed on the way with ``--compress zstd``), hashes it,
and records size, sha256, mtime, inode and the capture's preflight facts in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from netdeploy import eventlog
from netdeploy.config import Config
from netdeploy.images import hashing, seedrules
from netdeploy.images.catalog import (
    BAD,
    BUSY_STATES,
    IMAGE_NAME,
    MISSING,
    OK,
    UNHASHED,
    FileIdentity,
    readd_hint,
    users_in,
)
from netdeploy.images.preflight import PreflightError, read_facts
from netdeploy.store.models import Event, Image, utcnow

# progress(description, total_bytes) -> callback(bytes_done_since_last_call)
ProgressFactory = Callable[[str, int], hashing.Progress]
SYSPREP_MODES = ("reseal", "factory")


def no_progress(_description: str, _total: int) -> hashing.Progress:
    return lambda _n: None


class CatalogError(Exception):
    """An image action cannot be done; the one-line message says why and what to do."""


@dataclass
class AddRequest:
    name: str
    source: Path
    hardware: list[str] = field(default_factory=list)
    compress: str | None = None  # "zstd"
    sysprep: str | None = None  # reseal | factory
    without_cluster_service: bool = False
    no_shared_storage: bool = False
    force: bool = False  # replace the image even while nodes are being imaged with it
    force_reason: str | None = None  # override a preflight refusal; recorded with the actor
    actor: str = "cli"


def declared(cfg: Config, name: str) -> None:
    if not IMAGE_NAME.match(name):
        raise CatalogError(
            f"{name!r} is not a valid image name: use letters, digits, '.', '_', '+', '-'"
        )
    if name not in cfg.images:
        raise CatalogError(
            f"image {name!r} is not declared in {cfg.source}; add [images.{name}] with "
            f'file = "{name}.img" there first (declared: {", ".join(sorted(cfg.images)) or "none"})'
        )


def check_source(path: Path) -> os.stat_result:
    """PATH must be a regular file we can read; checked before anything else is touched."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise CatalogError(f"cannot add {path}: not a regular file")
        with open(path, "rb") as fh:
            fh.read(1)
    except FileNotFoundError:
        raise CatalogError(f"cannot add {path}: no such file") from None
    except OSError as exc:
        raise CatalogError(f"cannot add {path}: {exc.strerror or exc}") from None
    return st


def _check_request(cfg: Config, req: AddRequest) -> list[str]:
    """The flags themselves; returns the clusters built from this image."""
    unknown = [p for p in req.hardware if p not in cfg.hardware]
    if unknown:
        raise CatalogError(
            f"unknown hardware profile {', '.join(unknown)}; "
            f"defined: {', '.join(sorted(cfg.hardware)) or 'none'}"
        )
    if req.sysprep is not None and req.sysprep not in SYSPREP_MODES:
        raise CatalogError(f"--sysprep must be reseal or factory, not {req.sysprep!r}")
    return sorted(c for c, cl in cfg.clusters.items() if cl.image == req.name)


def preflight(cfg: Config, req: AddRequest, clusters: list[str]) -> dict[str, Any]:
    """The seed's capture rules, read from the image itself (netdeploy.images.preflight) and
    judged (netdeploy.images.seedrules); blocking. Raises :class:`CatalogError` with the fact
    that broke a rule, unless ``req.force_reason`` overrides it (recorded)."""
    try:
        cfg.server.images_dir.mkdir(parents=True, exist_ok=True)
        facts = read_facts(req.source, tmp_dir=cfg.server.images_dir)
    except PreflightError as exc:
        raise CatalogError(str(exc)) from None
    profiles = req.hardware or cfg.images[req.name].hardware
    mass_storage = {
        p: [d.hardware_id for d in cfg.hardware[p].mass_storage]
        for p in profiles
        if p in cfg.hardware
    }
    claims = seedrules.Claims(req.sysprep, req.without_cluster_service, req.no_shared_storage)
    verdict = seedrules.judge(facts, claims, clusters=clusters, mass_storage=mass_storage)
    forced = None
    if verdict.refusals:
        if not req.force_reason:
            message = seedrules.refusal_message(req.name, verdict)
            if req.force:
                message += " (--force without a REASON only replaces an image in use)"
            raise CatalogError(message)
        forced = {
            "by": req.actor,
            "reason": req.force_reason,
            "at": utcnow().isoformat(),
            "overrode": [f.message for f in verdict.refusals],
        }
    return {
        **verdict.summary(),
        "hardware": list(req.hardware),
        "clusters": clusters,
        "preflight": {
            "facts": facts,
            "findings": verdict.as_json(),
            "refused": [f.message for f in verdict.refusals],
            "forced": forced,
        },
    }


def _served_format(cfg: Config, req: AddRequest) -> str:
    """Reconcile the config's ``format``, the source's bytes and ``--compress``."""
    want = cfg.images[req.name].format
    have = hashing.sniff_format(req.source)
    if req.compress not in (None, "zstd"):
        raise CatalogError(f"--compress supports zstd only, not {req.compress!r}")
    if req.compress and have == "raw+zstd":
        raise CatalogError(f"{req.source} is already zstd-compressed; drop --compress")
    result = "raw+zstd" if req.compress or have == "raw+zstd" else "raw"
    if result != want:
        if want == "raw" and result == "raw+zstd":
            raise CatalogError(
                f'[images.{req.name}] says format = "raw" but the image would be zstd: set '
                f'format = "raw+zstd" in {cfg.source} (or add an uncompressed file)'
            )
        raise CatalogError(
            f'[images.{req.name}] says format = "raw+zstd" but {req.source} is not '
            "compressed; add --compress zstd"
        )
    return result


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _place(req: AddRequest, dest: Path, progress: ProgressFactory) -> dict[str, Any]:
    """Put the image at ``dest`` atomically and hash it; blocking, run in a thread.

    The new file is built under a temporary name in the same directory and renamed over
    ``dest`` only once whole, so a node streaming the old image keeps a consistent file.
    """
    size = req.source.stat().st_size
    facts: dict[str, Any] = {"source": str(req.source.resolve())}
    if _same_file(req.source, dest) and not req.compress:
        digest = hashing.hash_file(dest, progress(f"hashing {req.name}", size))
        facts["placed"] = "in place"
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.adding-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            if req.compress:
                both = hashing.compress_and_hash(
                    req.source, tmp, progress(f"compressing {req.name}", size)
                )
                digest = both.served
                facts.update(raw_size=both.raw.size, raw_sha256=both.raw.sha256, placed="zstd")
            else:
                try:
                    os.link(req.source, tmp)  # same file system: no copy, no extra space
                    digest = hashing.hash_file(tmp, progress(f"hashing {req.name}", size))
                    facts["placed"] = "hard link"
                except OSError:  # another file system (EXDEV) or links not allowed
                    digest = hashing.copy_and_hash(
                        req.source, tmp, progress(f"copying {req.name}", size)
                    )
                    facts["placed"] = "copy"
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(dest.parent)
    if hashing.sniff_format(dest) == "raw+zstd" and "raw_sha256" not in facts:
        raw = hashing.raw_digest_of_zstd(dest, progress(f"checking zstd {req.name}", digest.size))
        facts.update(raw_size=raw.size, raw_sha256=raw.sha256)
    st = dest.stat()
    if st.st_size != digest.size:
        raise CatalogError(f"{dest} changed while it was being added; run image add again")
    facts.update(sha256=digest.sha256, identity=FileIdentity.of(st))
    return facts


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename survives a power cut
    finally:
        os.close(fd)


async def _refuse_if_busy(sessions: async_sessionmaker, name: str, doing: str) -> None:
    async with sessions() as session:
        busy = await users_in(session, name, BUSY_STATES)
    if busy:
        who = ", ".join(f"{n.hostname or n.mac} ({n.state})" for n in busy)
        raise CatalogError(
            f"cannot {doing} image {name!r}: nodes are being imaged with it: {who}; "
            "wait until they finish"
        )


async def add_image(
    cfg: Config,
    sessions: async_sessionmaker,
    req: AddRequest,
    progress: ProgressFactory = no_progress,
) -> tuple[Image, Event]:
    """Check, place, hash and record one image; raise :class:`CatalogError` with one line."""
    declared(cfg, req.name)
    check_source(req.source)
    clusters = _check_request(cfg, req)
    checked = await asyncio.to_thread(preflight, cfg, req, clusters)
    fmt = _served_format(cfg, req)
    if not req.force:
        await _refuse_if_busy(sessions, req.name, "replace")
    dest = cfg.image_path(req.name)
    try:
        placed = await asyncio.to_thread(_place, req, dest, progress)
    except hashing.HashError as exc:
        raise CatalogError(str(exc)) from None
    identity: FileIdentity = placed.pop("identity")
    sha256: str = placed.pop("sha256")
    pinned = cfg.images[req.name].sha256
    if pinned and pinned != sha256:
        raise CatalogError(
            f"{req.source} has sha256 {sha256} but [images.{req.name}] pins {pinned}; "
            "wrong file, or update the pin"
        )
    async with sessions() as session, session.begin():
        row = await session.get(Image, req.name)
        if row is None:
            raise CatalogError(f"image {req.name!r} is not in the store; run netdeploy check")
        row.path = str(dest)
        row.format = fmt
        row.size, row.sha256, row.mtime_ns = identity.size, sha256, identity.mtime_ns
        row.status, row.status_detail = OK, ""
        row.facts = {**checked, **placed, "inode": identity.inode}
        row.added_at = utcnow()
        event = eventlog.image_change(req.name, action="added", sha256=sha256, size=identity.size)
        session.add(event)
        if checked["preflight"]["forced"]:  # who overrode the seed's rules, and why
            forced = checked["preflight"]["forced"]
            session.add(eventlog.image_change(req.name, action="preflight-forced", **forced))
    return row, event


@dataclass(frozen=True)
class Verdict:
    name: str
    status: str
    message: str


async def verify_image(
    cfg: Config, sessions: async_sessionmaker, name: str, progress: ProgressFactory = no_progress
) -> Verdict:
    """Re-hash an added image: ok (and refresh its stat facts) or bad with the reason."""
    declared(cfg, name)
    async with sessions() as session:
        row = await session.get(Image, name)
    if row is None or row.sha256 is None:
        return Verdict(name, UNHASHED, f"not added yet; netdeploy image add {name} PATH")
    path = Path(row.path)
    try:
        before = FileIdentity.of(path.stat())
        bar = progress(f"verifying {name}", before.size)
        digest = await asyncio.to_thread(hashing.hash_file, path, bar)
        status, message = OK, f"sha256 {digest.sha256} matches"
        if digest.sha256 != row.sha256:
            status = BAD
            message = (
                f"content changed: sha256 is {digest.sha256}, catalog has {row.sha256}; "
                + readd_hint(name, row.path)
            )
    except FileNotFoundError:
        status, message = MISSING, f"{path} does not exist; {readd_hint(name, row.path)}"
    except (OSError, hashing.HashError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        status, message = BAD, f"cannot read {path}: {text}; {readd_hint(name, row.path)}"
    async with sessions() as session, session.begin():
        row = await session.get(Image, name)
        assert row is not None
        if status == OK:  # same bytes: a touched or re-linked file is fine again
            row.size, row.mtime_ns = before.size, before.mtime_ns
            row.facts = {**(row.facts or {}), "inode": before.inode}
        row.status, row.status_detail = status, "" if status == OK else message
        session.add(eventlog.image_change(name, action="verified", status=status))
    return Verdict(name, status, message)


async def remove_image(
    cfg: Config, sessions: async_sessionmaker, name: str, *, delete_file: bool = False
) -> str:
    """Forget an image's catalog facts (it is no longer served); optionally delete its file."""
    declared(cfg, name)
    await _refuse_if_busy(sessions, name, "remove")
    async with sessions() as session, session.begin():
        row = await session.get(Image, name)
        if row is None or (row.sha256 is None and not delete_file):
            raise CatalogError(f"image {name!r} is not added; nothing to remove")
        path = Path(row.path)
        row.size = row.sha256 = row.mtime_ns = row.added_at = None
        row.status, row.status_detail, row.facts = UNHASHED, "removed by image rm", {}
        session.add(eventlog.image_change(name, action="removed"))
        if delete_file:
            images_dir = cfg.server.images_dir.resolve()
            if not path.resolve().is_relative_to(images_dir):
                raise CatalogError(
                    f"{path} is outside {images_dir}; not deleting it (drop --delete-file)"
                )
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    gone = f" and deleted {path}" if delete_file else ""
    return (
        f"removed image {name!r} from the catalog{gone}; it is no longer served "
        f"(remove [images.{name}] from {cfg.source} if it is gone for good)"
    )
