"""Network capture: a machine marked by the admin streams its disk into an image.

1. ``request``: the admin marks a MAC (`netdeploy image capture NAME --node MAC`, through the
   admin API). Its next PXE boot gets the agent in capture mode (netdeploy.boot.plan).
2. ``begin``: the agent says how large its disk is; the server keeps a sparse partial file
   ``images_dir/.NAME.capture-MAC.partial`` of that size and answers where to go on: 0 for a new
   capture, the committed offset for a resumed one.
3. ``receive``: one segment at a time (netdeploy.images.sparse: a zstd frame holding only the
   non-zero blocks of a raw range). A segment is written and fsynced, then ``received`` moves
   past it, in that order: a cut or a crash loses at most the segment in flight, and the agent
   resumes at ``received``.
4. ``finish``: the agent sends the sha256 of its whole disk; the server hashes the assembled
   file, and on a match adds it as image NAME with the same preflight as `image add`
   (netdeploy.images.actions). The capture is then ``done`` (or ``refused`` by preflight, or
   ``failed``) and the machine's boot plan is its local disk again: never a capture loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from netdeploy import eventlog
from netdeploy.config import Config
from netdeploy.events import EventBus
from netdeploy.images import actions, hashing, sparse
from netdeploy.images.catalog import BUSY_STATES
from netdeploy.inventory import mac_hyphens
from netdeploy.store.models import Capture, Event, Image, Node, utcnow

REQUESTED, CAPTURING, DONE, FAILED, REFUSED = "requested", "capturing", "done", "failed", "refused"
ACTIVE = (REQUESTED, CAPTURING)  # the next PXE boot captures
FINISHED = (DONE, FAILED, REFUSED)  # the next PXE boot is the local disk
SEGMENT = 32 * 1024 * 1024  # raw bytes per upload request: what a cut can cost


class CaptureError(Exception):
    """Refused; ``status`` is the HTTP status the route answers with."""

    def __init__(self, message: str, status: int = 409, **extra: Any):
        super().__init__(message)
        self.status, self.extra = status, extra


def capture_json(row: Capture) -> dict[str, Any]:
    size = row.disk_size or 0
    return {
        "mac": row.mac,
        "image": row.image,
        "state": row.state,
        "detail": row.detail,
        "actor": row.actor,
        "force_reason": row.force_reason,
        "disk_size": row.disk_size,
        "received": row.received,
        "percent": round(100 * row.received / size, 1) if size else 0.0,
        "wire_bytes": row.wire_bytes,
        "data_bytes": row.data_bytes,
        "sha256": row.sha256,
        "requested_at": row.requested_at.isoformat() if row.requested_at else None,
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
    }


def partial_path(cfg: Config, row: Capture) -> Path:
    return cfg.server.images_dir / f".{row.image}.capture-{mac_hyphens(row.mac)}.partial"


def _event(row: Capture, message: str, **detail: Any) -> Event:
    return eventlog.capture(row.mac, row.image, row.state, message, **detail)


async def request(
    cfg: Config,
    sessions: async_sessionmaker,
    bus: EventBus,
    *,
    image: str,
    mac: str,
    actor: str,
    force_reason: str | None = None,
) -> Capture:
    """Mark ``mac`` for capture into ``image`` (a new request replaces a finished one)."""
    try:
        actions.declared(cfg, image)
    except actions.CatalogError as exc:
        raise CaptureError(str(exc), 404) from None
    async with sessions() as session, session.begin():
        node = await session.get(Node, mac)
        if node is not None and node.state in BUSY_STATES:
            raise CaptureError(
                f"{node.hostname or mac} is being imaged ({node.state}); capture it afterwards"
            )
        row = await session.get(Capture, mac)
        if row is not None and row.state == CAPTURING:
            raise CaptureError(
                f"{mac} is capturing into {row.image} now ({row.received} of {row.disk_size} "
                "bytes); cancel it first (netdeploy image capture --cancel --node MAC)"
            )
        other = await session.scalar(
            select(Capture).where(Capture.image == image, Capture.state.in_(ACTIVE))
        )
        if other is not None and other.mac != mac:
            raise CaptureError(f"image {image} is already being captured from {other.mac}")
        if row is None:
            row = Capture(mac=mac, image=image)
            session.add(row)
        # not a node's state: the capture's own
        row.image, row.state, row.detail = image, REQUESTED, "waiting for the next PXE boot"
        row.actor, row.force_reason = actor, force_reason
        row.disk_size, row.sha256 = None, None
        row.received = row.wire_bytes = row.data_bytes = 0
        row.requested_at = row.updated_at = utcnow()
        event = _event(row, f"capture into {image} requested by {actor}", actor=actor)
        session.add(event)
    bus.publish(event)
    return row


async def cancel(
    cfg: Config, sessions: async_sessionmaker, bus: EventBus, mac: str, actor: str
) -> Capture:
    """Forget the mark (the machine goes back to its rollout plan) and any partial upload."""
    async with sessions() as session, session.begin():
        row = await session.get(Capture, mac)
        if row is None:
            raise CaptureError(f"no capture for {mac}", 404)
        await session.delete(row)
        event = _event(row, f"capture into {row.image} cancelled by {actor}", actor=actor)
        session.add(event)
    bus.publish(event)
    if row.state != REFUSED:  # a refused capture's file is the admin's to add with --force
        await asyncio.to_thread(partial_path(cfg, row).unlink, True)
    return row


async def get(sessions: async_sessionmaker, mac: str) -> Capture | None:
    async with sessions() as session:
        return await session.get(Capture, mac)


async def listing(sessions: async_sessionmaker) -> list[Capture]:
    async with sessions() as session:
        return list((await session.scalars(select(Capture).order_by(Capture.mac))).all())


async def _active(sessions: async_sessionmaker, mac: str) -> Capture:
    row = await get(sessions, mac)
    if row is None or row.state not in ACTIVE:
        state = row.state if row else "none"
        raise CaptureError(f"no capture is asked of {mac} (capture state {state})", 409)
    return row


async def begin(
    cfg: Config, sessions: async_sessionmaker, bus: EventBus, mac: str, size: int
) -> Capture:
    """The agent starts (or resumes after a cut or its own reboot): where to go on."""
    if size <= 0 or size % 512:
        raise CaptureError(f"disk size {size} is not a positive multiple of 512", 400)
    row = await _active(sessions, mac)
    path = partial_path(cfg, row)
    fresh = row.disk_size != size or not path.exists()

    def prepare() -> None:
        cfg.server.images_dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            with open(path, "wb") as fh:
                fh.truncate(size)  # sparse: the zero blocks never sent stay holes

    await asyncio.to_thread(prepare)
    async with sessions() as session, session.begin():
        row = await session.get(Capture, mac)
        assert row is not None
        if fresh:
            row.received = row.wire_bytes = row.data_bytes = 0
        # not a node's state: the capture's own
        row.disk_size, row.state, row.updated_at = size, CAPTURING, utcnow()
        row.detail = "resuming" if not fresh and row.received else "capturing"
        how = f"resuming at {row.received} bytes" if not fresh and row.received else "starting"
        event = _event(row, f"capture of {size} bytes into {row.image}: {how}", total=size)
        session.add(event)
    bus.publish(event)
    return row


@dataclass(frozen=True)
class Received:
    row: Capture
    data_bytes: int


async def receive(
    cfg: Config,
    sessions: async_sessionmaker,
    bus: EventBus,
    mac: str,
    offset: int,
    chunks: Any,
) -> Received:
    """One segment: decompress and parse as it arrives (``chunks``: async iterator of bytes),
    write it, then commit ``received``. A segment that does not start at ``received`` gets
    409 with the offset to resume from."""
    import zstandard

    row = await _active(sessions, mac)
    if row.state != CAPTURING or row.disk_size is None:
        raise CaptureError("send the disk size first (GET .../capture?size=N)", 409)
    if offset != row.received:
        raise CaptureError(
            f"segment at {offset} but the capture resumes at {row.received}",
            409,
            offset=row.received,
        )
    parser = sparse.SegmentParser(max_length=SEGMENT)
    inflate = zstandard.ZstdDecompressor().decompressobj()
    wire = 0
    try:
        async for chunk in chunks:
            wire += len(chunk)
            # small slices: one call's output stays small even for a zstd bomb (an RLE block
            # of 128 KiB costs 4 bytes); the parser refuses more bytes than the segment holds
            for at in range(0, len(chunk), 512):
                parser.feed(inflate.decompress(chunk[at : at + 512]))
        if not inflate.eof:
            raise sparse.SparseError("the zstd frame ended early (upload cut?)")
        segment = parser.finish()
    except (sparse.SparseError, zstandard.ZstdError) as exc:
        raise CaptureError(f"bad segment at {offset}: {exc}", 400, offset=row.received) from None
    if segment.offset != offset or segment.offset + segment.length > row.disk_size:
        raise CaptureError(
            f"segment covers {segment.offset}+{segment.length}, asked at {offset} of a "
            f"{row.disk_size}-byte disk",
            400,
            offset=row.received,
        )
    path = partial_path(cfg, row)

    def write() -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            sparse.write_segment(fd, segment)
            os.fsync(fd)
        finally:
            os.close(fd)

    await asyncio.to_thread(write)
    async with sessions() as session, session.begin():
        row = await session.get(Capture, mac)
        assert row is not None and row.disk_size is not None
        if row.received != offset:  # cancelled or raced by a second upload meanwhile
            raise CaptureError("the capture moved on meanwhile", 409, offset=row.received)
        row.received = offset + segment.length
        row.wire_bytes += wire
        row.data_bytes += segment.data_bytes
        row.updated_at = utcnow()
        pct = 100 * row.received / row.disk_size
        event = _event(
            row,
            f"capturing into {row.image}: {row.wire_bytes / 2**20:.1f} MiB over the wire",
            progress=round(pct, 1),
            bytes=row.received,
            total=row.disk_size,
        )
        session.add(event)
    bus.publish(event)
    return Received(row, segment.data_bytes)


async def finish(
    cfg: Config, sessions: async_sessionmaker, bus: EventBus, mac: str, sha256: str
) -> Capture:
    """Compare both sides' sha256, then add the image (preflight included)."""
    row = await _active(sessions, mac)
    if row.disk_size is None or row.received != row.disk_size:
        raise CaptureError(
            f"the capture has {row.received} of {row.disk_size} bytes; send the rest first",
            409,
            offset=row.received,
        )
    path = partial_path(cfg, row)
    try:
        digest = await asyncio.to_thread(hashing.hash_file, path)
    except hashing.HashError as exc:
        return await _end(sessions, bus, mac, FAILED, str(exc))
    if digest.sha256 != sha256.lower():
        # the assembled file is not the disk: start over on the next boot
        await asyncio.to_thread(path.unlink, True)
        async with sessions() as session, session.begin():
            r = await session.get(Capture, mac)
            assert r is not None
            r.received = 0
        return await _end(
            sessions,
            bus,
            mac,
            FAILED,
            f"sha256 mismatch: the agent read {sha256}, the server assembled {digest.sha256}",
        )
    fmt = cfg.images[row.image].format
    req = actions.AddRequest(
        name=row.image,
        source=path,
        compress="zstd" if fmt == "raw+zstd" else None,
        force_reason=row.force_reason,
        actor=f"capture requested by {row.actor}",
    )
    try:
        image, _event_row = await actions.add_image(cfg, sessions, req)
    except actions.CatalogError as exc:
        state = REFUSED if "refused by preflight" in str(exc) else FAILED
        return await _end(
            sessions,
            bus,
            mac,
            state,
            f"{exc}; the captured disk is kept at {path} (sha256 {digest.sha256})",
            sha256=digest.sha256,
        )
    await asyncio.to_thread(_drop_partial, path)
    await _record_origin(sessions, row, image.name)
    return await _end(
        sessions,
        bus,
        mac,
        DONE,
        f"image {image.name} added: sha256 {image.sha256} (both sides agree)",
        sha256=digest.sha256,
    )


def _drop_partial(partial: Path) -> None:
    """The partial file was hard-linked (or copied, compressed) into place: its name can go
    (a hard-linked image keeps the inode under its configured name)."""
    partial.unlink(missing_ok=True)


async def _record_origin(sessions: async_sessionmaker, row: Capture, name: str) -> None:
    async with sessions() as session, session.begin():
        image = await session.get(Image, name)
        node = await session.get(Node, row.mac)
        if image is not None:
            image.facts = {
                **(image.facts or {}),
                "captured_from": {
                    "mac": row.mac,
                    "hostname": node.hostname if node else None,
                    "actor": row.actor,
                    "disk_size": row.disk_size,
                    "wire_bytes": row.wire_bytes,
                    "data_bytes": row.data_bytes,
                },
            }


async def _end(
    sessions: async_sessionmaker,
    bus: EventBus,
    mac: str,
    state: str,
    detail: str,
    sha256: str | None = None,
) -> Capture:
    async with sessions() as session, session.begin():
        row = await session.get(Capture, mac)
        assert row is not None
        # not a node's state: the capture's own
        row.state, row.detail, row.updated_at = state, detail, utcnow()
        row.sha256 = sha256 or row.sha256
        event = _event(row, detail, wire_bytes=row.wire_bytes, data_bytes=row.data_bytes)
        session.add(event)
    bus.publish(event)
    return row


async def agent_failed(sessions: async_sessionmaker, bus: EventBus, mac: str, why: str) -> Capture:
    """The agent gave up (no disk, the server unreachable too long): local disk next boot."""
    await _active(sessions, mac)
    return await _end(sessions, bus, mac, FAILED, f"the agent gave up: {why}")
