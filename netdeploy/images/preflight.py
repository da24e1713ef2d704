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

READERS = ("dissect.volume", "dissect.ntfs", "dissect.fat", "dissect.extfs", "dissect.regf")
# Keys and values read from SYSTEM (\Select\Current picks the ControlSet)
SETUP_VALUES = (
    "CmdLine",
    "SetupType",
    "SystemSetupInProgress",
    "MiniSetupInProgress",
    "FactoryPreInstallInProgress",
    "OOBEInProgress",
)
MAX_LISTED = 64  # drivers, host keys, ...: enough to act on, bounded in the store


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
        entry["fs"], fs = _open_fs(stream)
        facts["partitions"].append(entry)
        if fs is None or facts["os"] is not None:
            continue
        if entry["fs"] in ("ntfs", "fat") and _windows_dir(fs) is not None:
            facts["os"] = "windows"
            facts["windows"] = _windows_facts(fs, entry, facts)
        elif entry["fs"] == "ext":
            linux = _linux_facts(fs, entry)
            if linux is not None:
                facts["os"] = "linux"
                facts["linux"] = linux
    if facts["os"] is None:
        facts["problems"].append("no Windows or Linux system volume found")
    return facts


def _line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


# ---------------------------------------------------------------- file systems


class _Volume:
    """One file-system interface over dissect.ntfs, dissect.fat and dissect.extfs."""

    def __init__(self, kind: str, fs: Any):
        self.kind, self.fs = kind, fs

    def _get(self, path: str) -> Any:
        path = path.strip("/")
        if self.kind == "ntfs":
            return self.fs.mft.get(path)  # "" is the root directory
        return self.fs.get("/" + path)

    def exists(self, path: str) -> bool:
        try:
            self._get(path)
            return True
        except Exception:  # each reader has its own FileNotFoundError
            return False

    def read(self, path: str, limit: int = 64 << 20) -> bytes | None:
        try:
            node = self._get(path)
            return bytes(node.open().read(limit))
        except Exception:
            return None

    def listdir(self, path: str) -> list[str] | None:
        try:
            node = self._get(path)
        except Exception:
            return None
        try:
            if self.kind == "ntfs":
                names = list(node.listdir())
            elif self.kind == "fat":
                names = [e.name for e in node.iterdir()]
            else:
                names = list(node.listdir())
        except Exception:
            return None
        return [n for n in names if n not in (".", "..")]

    def find(self, path: str) -> str | None:
        """``path`` spelled as on the volume, ignoring case (FAT and NTFS readers may not)."""
        spelled = ""
        for part in path.strip("/").split("/"):
            names = self.listdir(spelled)
            if names is None:
                return None
            hit = next((n for n in names if n.lower() == part.lower()), None)
            if hit is None:
                return None
            spelled = f"{spelled}/{hit}" if spelled else hit
        return spelled


def _open_fs(stream: BinaryIO) -> tuple[str, _Volume | None]:
    stream.seek(0)
    boot = stream.read(4096)
    stream.seek(0)
    try:
        if boot[3:11] == b"NTFS    ":
            from dissect.ntfs import NTFS

            return "ntfs", _Volume("ntfs", NTFS(stream))
        if len(boot) >= 1082 and boot[1080:1082] == b"\x53\xef":  # ext2/3/4 magic
            from dissect.extfs import ExtFS

            return "ext", _Volume("ext", ExtFS(stream))
        if boot[510:512] == b"\x55\xaa" and (b"FAT" in boot[54:62] or b"FAT32" in boot[82:90]):
            from dissect.fat import FATFS

            return "fat", _Volume("fat", FATFS(stream))
    except Exception as exc:
        return f"unreadable ({_line(exc)})", None
    return "unknown", None


# ---------------------------------------------------------------- Windows


def _windows_dir(vol: _Volume) -> str | None:
    return vol.find("WINDOWS/system32/config") or vol.find("WINNT/system32/config")


def _hive(vol: _Volume, config_dir: str, name: str, problems: list[str]) -> Any:
    from dissect.regf import RegistryHive

    spelled = vol.find(f"{config_dir}/{name}")
    if spelled is None:
        problems.append(f"no {name} hive in {config_dir}")
        return None
    data = vol.read(spelled)
    if data is None:
        problems.append(f"cannot read {spelled}")
        return None
    import io

    try:
        return RegistryHive(io.BytesIO(data))
    except Exception as exc:
        problems.append(f"{spelled} is not a registry hive ({_line(exc)})")
        return None


def _key(hive: Any, path: str) -> Any:
    try:
        return hive.open(path)
    except Exception:
        return None


def _value(key: Any, name: str) -> Any:
    if key is None:
        return None
    try:
        value = key.value(name).value
    except Exception:
        return None
    if isinstance(value, bytes):
        return value.hex()
    return value


def _subkeys(key: Any) -> list[Any]:
    if key is None:
        return []
    try:
        return list(key.subkeys())
    except Exception:
        return []


def _windows_facts(vol: _Volume, entry: dict[str, Any], disk: dict[str, Any]) -> dict[str, Any]:
    problems: list[str] = disk["problems"]
    config_dir = _windows_dir(vol)
    assert config_dir is not None
    facts: dict[str, Any] = {"partition": entry["number"], "system_root": config_dir.split("/")[0]}
    system = _hive(vol, config_dir, "SYSTEM", problems)
    software = _hive(vol, config_dir, "SOFTWARE", problems)
    security = _hive(vol, config_dir, "SECURITY", [])  # optional: domain SID
    sysprep_inf = vol.find("sysprep/sysprep.inf")
    facts["sysprep"] = {"state": None, "mini_setup_pending": None, "sysprep_inf": sysprep_inf}
    facts["cluster_service"] = {"configured": None, "evidence": []}
    facts["other_disks"] = None
    if software is not None:
        cv = _key(software, "Microsoft\\Windows NT\\CurrentVersion")
        facts["os_version"] = {
            "product": _value(cv, "ProductName"),
            "version": _value(cv, "CurrentVersion"),
            "build": _value(cv, "CurrentBuildNumber"),
            "service_pack": _value(cv, "CSDVersion") or "",
        }
    cluster_files = vol.find(f"{facts['system_root']}/Cluster/CLUSDB")
    if system is None:
        facts["cluster_service"]["evidence"] = [f"{cluster_files} exists"] if cluster_files else []
        if cluster_files:
            facts["cluster_service"]["configured"] = True
        return facts
    current = _value(_key(system, "Select"), "Current") or 1
    cs = f"ControlSet{int(current):03d}"
    facts["control_set"] = cs
    facts["computer_name"] = _value(
        _key(system, f"{cs}\\Control\\ComputerName\\ComputerName"), "ComputerName"
    )
    facts["sysprep"].update(_sysprep_state(_key(system, "Setup")))
    facts["cluster_service"] = _cluster_service(system, software, cs, cluster_files)
    facts["domain"] = _domain(system, software, security, cs)
    facts["other_disks"] = _other_disks(system, disk.get("disk_signature"))
    facts["mass_storage"] = _mass_storage(system, cs)
    return facts


def _sysprep_state(setup: Any) -> dict[str, Any]:
    """HKLM\\SYSTEM\\Setup after sysprep: -reseal sets SystemSetupInProgress=1 and CmdLine
    "setup -newsetup" ("-mini" for Mini-Setup); -factory sets FactoryPreInstallInProgress=1 and
    CmdLine runs factory.exe. A master in use has SystemSetupInProgress=0 and no CmdLine."""
    values = {name: _value(setup, name) for name in SETUP_VALUES}
    cmdline = str(values["CmdLine"] or "").lower()
    if values["FactoryPreInstallInProgress"] == 1 or "factory" in cmdline:
        state = "factory"
    elif values["SystemSetupInProgress"] == 1 and "-newsetup" in cmdline:
        state = "reseal"
    elif setup is None:
        state = None
    else:
        state = "none"
    mini = values["MiniSetupInProgress"] == 1 or "-mini" in cmdline
    return {"state": state, "mini_setup_pending": mini, "setup": values}


def _cluster_service(system: Any, software: Any, cs: str, clusdb: str | None) -> dict[str, Any]:
    """Configured (the seed's "cluster service installed"): any of ClusSvc's service key with a
    start type other than disabled, its Parameters naming a cluster, ClusterInstallationState=2
    (configured) or the cluster database CLUSDB on the volume. Windows Server 2003 Enterprise
    ships the binaries and a disabled ClusSvc: that alone is not configured."""
    evidence = []
    svc = _key(system, f"{cs}\\Services\\ClusSvc")
    start = _value(svc, "Start")
    if svc is not None and start is not None and start != 4:
        evidence.append(f"HKLM\\SYSTEM\\{cs}\\Services\\ClusSvc Start={start} (not disabled)")
    params = _key(system, f"{cs}\\Services\\ClusSvc\\Parameters")
    for name in ("ClusterName", "NodeName"):
        if _value(params, name):
            evidence.append(f"ClusSvc\\Parameters {name}={_value(params, name)}")
    if software is not None:
        state = _value(
            _key(software, "Microsoft\\Windows NT\\CurrentVersion\\Cluster Server"),
            "ClusterInstallationState",
        )
        if state == 2:
            evidence.append("Cluster Server\\ClusterInstallationState=2 (configured)")
    if clusdb:
        evidence.append(f"cluster database {clusdb} exists")
    return {
        "configured": bool(evidence),
        "installed": svc is not None,
        "start": start,
        "evidence": evidence,
    }


def _domain(system: Any, software: Any, security: Any, cs: str) -> dict[str, Any]:
    """Member of a domain when LSA's primary-domain SID (SECURITY\\Policy\\PolPrDmS) is set;
    without a SECURITY hive, the names Winlogon and Tcpip keep are the best evidence."""
    winlogon = None
    if software is not None:
        winlogon = _key(software, "Microsoft\\Windows NT\\CurrentVersion\\Winlogon")
    tcpip = _key(system, f"{cs}\\Services\\Tcpip\\Parameters")
    name = (
        _value(winlogon, "CachePrimaryDomain")
        or _value(winlogon, "DefaultDomainName")
        or _value(tcpip, "Domain")
        or None
    )
    member: bool | None = None
    evidence = "no SECURITY hive: from Winlogon/Tcpip names"
    if security is not None:
        sid = _key(security, "Policy\\PolPrDmS")
        raw = _value(sid, "") if sid is not None else None
        member = bool(raw)
        evidence = "SECURITY\\Policy\\PolPrDmS " + ("set" if member else "empty")
    return {"member": member, "name": name, "evidence": evidence}


def _other_disks(system: Any, signature: str | None) -> list[str] | None:
    """Drive letters the master mounted from disks other than its own: MountedDevices values of
    12 bytes are an MBR disk signature and a partition offset. Another signature means another
    disk was attached (the shared storage, before capture)."""
    mounted = _key(system, "MountedDevices")
    if mounted is None or signature is None:
        return None
    others = []
    try:
        values = list(mounted.values())
    except Exception:
        return None
    for value in values:
        data = value.value
        name = value.name or ""
        if not name.startswith("\\DosDevices\\") or not isinstance(data, bytes) or len(data) != 12:
            continue
        seen = f"{struct.unpack_from('<I', data, 0)[0]:08x}"
        if seen != signature:
            others.append(f"{name.removeprefix(chr(92) + 'DosDevices' + chr(92))} on disk {seen}")
    return sorted(others)


def _mass_storage(system: Any, cs: str) -> dict[str, Any]:
    """Boot-critical storage drivers: CriticalDeviceDatabase entries (hardware ID → service),
    which [SysprepMassStorage] fills at reseal, and services in group "SCSI miniport"."""
    cdd = _key(system, f"{cs}\\Control\\CriticalDeviceDatabase")
    ids = {}
    for sub in _subkeys(cdd):
        name = sub.name.lower()
        if name.startswith(("pci#", "pcmcia#", "scsi#")):
            ids[name] = _value(sub, "Service")
    miniports = []
    for sub in _subkeys(_key(system, f"{cs}\\Services")):
        if str(_value(sub, "Group") or "").lower() == "scsi miniport":
            miniports.append(sub.name)
    return {
        "critical_devices": len(ids),
        "hardware_ids": dict(sorted(ids.items())[: MAX_LISTED * 4]),
        "miniports": sorted(miniports)[:MAX_LISTED],
    }


# ---------------------------------------------------------------- Linux


def _linux_facts(vol: _Volume, entry: dict[str, Any]) -> dict[str, Any] | None:
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
