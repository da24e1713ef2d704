"""The image catalog: what `image add` recorded about each image, and whether the file still is it.

An image is served only when its catalog row says ``ok`` and the file on disk is still the file
that was hashed: same size, same mtime, same inode. That check is one ``stat`` per request; a
mismatch marks the image ``bad`` (or ``missing``) with the reason, and nothing is served until the
admin re-adds it. Content changes that keep size and mtime are left to ``image verify`` (a full
re-hash) and to the agent, which checks the sha256 of every byte it wrote.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from netdeploy import eventlog
from netdeploy.config import Config
from netdeploy.events import EventBus
from netdeploy.inventory import NodeState
from netdeploy.store.models import Image, Node

# Names become URL path segments (/images/NAME): no '/', no leading '.', nothing to escape.
IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")

OK, BAD, MISSING, UNHASHED = "ok", "bad", "missing", "unhashed"
# A rollout is streaming an image to a node in these states; the image must not change under it.
BUSY_STATES = (NodeState.PXE, NodeState.IMAGING)


@dataclass(frozen=True)
class FileIdentity:
    """What `image add` saw; any difference later means the file is no longer the hashed one."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)

    @classmethod
    def of_row(cls, row: Image) -> FileIdentity | None:
        if row.size is None or row.mtime_ns is None:
            return None
        return cls(row.size, row.mtime_ns, int((row.facts or {}).get("inode", 0)))

    def change_to(self, now: FileIdentity) -> str:
        """Why ``now`` is not this file, in words an admin can act on ('' when it is)."""
        if now.size != self.size:
            return f"size changed from {self.size} to {now.size} bytes"
        if now.inode != self.inode and self.inode:
            return "the file was replaced by another file"
        if now.mtime_ns != self.mtime_ns:
            return "the file was modified after it was added"
        return ""


class NotServable(Exception):
    """The image exists in config but must not be served now; ``status`` is its catalog status."""

    def __init__(self, name: str, status: str, reason: str):
        self.name, self.status, self.reason = name, status, reason
        super().__init__(reason)


def readd_hint(name: str, path: str) -> str:
    return f"re-add it: netdeploy image add {name} {path}"


def check_row(cfg: Config, row: Image) -> None:
    """Raise :class:`NotServable` unless the catalog says this image may be served."""
    if row.status == UNHASHED or row.sha256 is None:
        raise NotServable(
            row.name,
            UNHASHED,
            f"image {row.name!r} has not been added yet; {readd_hint(row.name, row.path)}",
        )
    if row.status != OK:
        raise NotServable(
            row.name,
            row.status,
            f"image {row.name!r} is {row.status}: {row.status_detail}",
        )
    pinned = cfg.images[row.name].sha256 if row.name in cfg.images else None
    if pinned and pinned != row.sha256:
        raise NotServable(
            row.name,
            BAD,
            f"image {row.name!r} has sha256 {row.sha256} but the config pins {pinned}; "
            "fix [images] sha256 or re-add the right file",
        )


@dataclass
class OpenImage:
    """An open image file whose identity was checked against the catalog just after opening."""

    fh: Any  # binary file object
    identity: FileIdentity

    def still_same(self) -> str:
        """'' when the open file is unchanged since opening, else why (for a mid-stream check)."""
        return self.identity.change_to(FileIdentity.of(os.fstat(self.fh.fileno())))

    def close(self) -> None:
        self.fh.close()


def open_checked(row: Image) -> OpenImage:
    """Open the image file and prove it is the catalogued file, or raise :class:`NotServable`.

    Blocking (open + fstat): call it in a worker thread. The identity is taken from the open
    descriptor, so a rename-replace after this point cannot mix files into this response.
    """
    expected = FileIdentity.of_row(row)
    hint = readd_hint(row.name, row.path)
    try:
        fh = open(row.path, "rb")  # noqa: SIM115 (closed by the caller, after streaming)
    except FileNotFoundError:
        raise NotServable(row.name, MISSING, f"{row.path} does not exist; {hint}") from None
    except OSError as exc:
        raise NotServable(
            row.name, BAD, f"cannot read {row.path}: {exc.strerror or exc}; {hint}"
        ) from None
    try:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotServable(row.name, BAD, f"{row.path} is not a regular file; {hint}")
        now = FileIdentity.of(st)
        why = expected.change_to(now) if expected else "no catalog facts"
        if why:
            raise NotServable(row.name, BAD, f"{row.path}: {why}; {hint}")
    except BaseException:
        fh.close()
        raise
    return OpenImage(fh, now)


async def mark_not_servable(
    sessions: async_sessionmaker, bus: EventBus, problem: NotServable, seen: Image
) -> None:
    """Record that an image went bad, once, unless it was re-added since ``seen`` was read.

    Compare-and-set on sha256 and mtime: `image add` renames the new file into place and then
    commits; a request that saw the old row between those two steps must not undo the re-add.
    """
    if problem.status not in (BAD, MISSING):
        return
    async with sessions() as session, session.begin():
        row = await session.get(Image, seen.name, with_for_update=True)
        if row is None or row.status != OK:
            return
        if (row.sha256, row.mtime_ns) != (seen.sha256, seen.mtime_ns):
            return
        row.status, row.status_detail = problem.status, problem.reason
        event = eventlog.image_change(row.name, status=problem.status, reason=problem.reason)
        session.add(event)
    bus.publish(event)


async def users_in(session: AsyncSession, name: str, states: tuple[str, ...]) -> list[Node]:
    """Nodes that use image ``name`` and are in one of ``states``."""
    rows = await session.scalars(
        select(Node).where(Node.image == name, Node.state.in_(states)).order_by(Node.hostname)
    )
    return list(rows.all())


def image_json(row: Image, public_url: str = "") -> dict[str, Any]:
    facts = dict(row.facts or {})
    return {
        "name": row.name,
        "url": f"{public_url}/images/{row.name}",
        "path": row.path,
        "format": row.format,
        "description": row.description,
        "hardware": list(row.hardware or []),
        "size": row.size,
        "sha256": row.sha256,
        "status": row.status,
        "status_detail": row.status_detail,
        "added_at": row.added_at.isoformat() if row.added_at else None,
        "facts": facts,
    }
