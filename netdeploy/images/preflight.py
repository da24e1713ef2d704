"""Preflight: read the facts of a captured disk image from the image itself.

The seed (Microsoft, "Image-based Installations of Server Clusters") asks for a master built
*without* the cluster service, *not* attached to the shared storage, and sealed with
``sysprep -reseal`` (or ``-factory``) before it is imaged. Instead of believing flags, this module
opens the image with maintained pure-Python readers (docs/decisions/0012-preflight-readers.md):
``dissect.volume`` for the partition table, ``dissect.ntfs`` / ``dissect.fat`` / ``dissect.extfs``
for the volumes and ``dissect.regf`` for the Windows registry hives, and returns plain JSON facts.
Nothing here decides; :mod:`netdeploy.images.seedrules` judges the facts.

Blocking (file I/O); run it in a thread. A ``raw+zstd`` image is decompressed into a sparse
temporary file first (the readers need random access; zstd frames have none).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from netdeploy.images import hashing
from netdeploy.images.preflight_windows import windows_dir, windows_facts
from netdeploy.images.volumes import MAX_LISTED, Volume, open_fs

READERS = ("dissect.volume", "dissect.ntfs", "dissect.fat", "dissect.extfs", "dissect.regf")


class PreflightError(Exception):
    """The image cannot be opened at all (not a readable file); the message says why."""


def readers_versions() -> dict[str, str]:
    out = {}
    for name in READERS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


@contextlib.contextmanager
def opened_image(
    path: Path, fmt: str | None = None, tmp_dir: Path | None = None
) -> Iterator[BinaryIO]:
    """The raw disk bytes of ``path`` as a seekable file (zstd decompressed into a sparse temp)."""
    fmt = fmt or hashing.sniff_format(path)
    if fmt != "raw+zstd":
        with open(path, "rb") as fh:
            yield fh
        return
    import zstandard

    with tempfile.TemporaryFile(dir=tmp_dir, prefix=f".{path.name}.preflight-") as tmp:
        zero = bytes(1 << 16)
        with open(path, "rb") as src, zstandard.ZstdDecompressor().stream_reader(src) as raw:
            size = 0
            while chunk := raw.read(1 << 16):
                if chunk == zero[: len(chunk)]:
                    tmp.seek(len(chunk), os.SEEK_CUR)  # a hole: no space for zeroes
                else:
                    tmp.write(chunk)
                size += len(chunk)
            tmp.truncate(size)
        tmp.seek(0)
        yield tmp  # type: ignore[misc]


def read_facts(path: Path, fmt: str | None = None, tmp_dir: Path | None = None) -> dict[str, Any]:
    """Everything preflight knows about the image at ``path``; never raises for content it
    cannot understand (that becomes a ``problems`` entry), only for a file it cannot open."""
    try:
        with opened_image(path, fmt, tmp_dir) as fh:
            return _facts(fh)
    except OSError as exc:
        raise PreflightError(f"cannot read {path}: {exc.strerror or exc}") from None


def _facts(fh: BinaryIO) -> dict[str, Any]:
    from dissect.volume.disk import Disk

    facts: dict[str, Any] = {
        "readers": readers_versions(),
        "partition_table": "none",
        "disk_signature": None,
        "partitions": [],
        "os": None,
        "problems": [],
    }
    fh.seek(0)
    sector = fh.read(512)
    if len(sector) == 512 and sector[510:512] == b"\x55\xaa":
        facts["disk_signature"] = f"{struct.unpack_from('<I', sector, 440)[0]:08x}"
    volumes: list[tuple[dict[str, Any], BinaryIO]] = []
    try:
        fh.seek(0)
        disk = Disk(fh)
        facts["partition_table"] = type(disk.scheme).__name__.lower()
        for part in disk.partitions:
            if part.size == 0:
                continue
            entry = {"number": part.number, "offset": part.offset, "size": part.size}
            entry["type"] = str(part.type_str or part.type) if hasattr(part, "type_str") else ""
            volumes.append((entry, part.open()))
    except Exception:  # no partition table: maybe a bare file system (a partition image)
        facts["problems"].append("no partition table; read as one volume")
        fh.seek(0)
        volumes.append(({"number": 0, "offset": 0, "size": None, "type": "whole disk"}, fh))
    for entry, stream in volumes:
        entry["fs"], fs = open_fs(stream)
        facts["partitions"].append(entry)
        if fs is None or facts["os"] is not None:
            continue
        if entry["fs"] in ("ntfs", "fat") and windows_dir(fs) is not None:
            facts["os"] = "windows"
            facts["windows"] = windows_facts(fs, entry, facts)
        elif entry["fs"] == "ext":
            linux = _linux_facts(fs, entry)
            if linux is not None:
                facts["os"] = "linux"
                facts["linux"] = linux
    if facts["os"] is None:
        facts["problems"].append("no Windows or Linux system volume found")
    return facts


# ---------------------------------------------------------------- Linux


def _linux_facts(vol: Volume, entry: dict[str, Any]) -> dict[str, Any] | None:
    if not vol.exists("etc") or vol.listdir("etc") is None:
        return None
    machine_id = vol.read("etc/machine-id")
    if machine_id is None:
        mid = "absent"
    elif machine_id.strip() in (b"", b"uninitialized"):
        mid = "empty"
    else:
        mid = "set"
    keys = sorted(n for n in (vol.listdir("etc/ssh") or []) if n.startswith("ssh_host_"))
    cloud = []
    for path in ("var/lib/cloud/instance", "var/lib/cloud/instances", "var/lib/cloud/data"):
        listed = vol.listdir(path)
        if listed or (listed is None and vol.exists(path)):
            cloud.append(path)
    os_release = (vol.read("etc/os-release") or vol.read("usr/lib/os-release") or b"").decode(
        "utf-8", "replace"
    )
    pretty = next(
        (
            line.split("=", 1)[1].strip('"')
            for line in os_release.splitlines()
            if line.startswith("PRETTY_NAME=")
        ),
        None,
    )
    hostname = (vol.read("etc/hostname") or b"").decode("utf-8", "replace").strip() or None
    return {
        "partition": entry["number"],
        "os_version": pretty,
        "hostname": hostname,
        "machine_id": mid,
        "ssh_host_keys": keys[:MAX_LISTED],
        "cloud_init": "clean" if not cloud else "state left: " + ", ".join(cloud),
        "cloud_init_state": cloud,
    }
