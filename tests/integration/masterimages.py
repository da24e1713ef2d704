"""Small but real master images for preflight: a Windows system partition (NTFS with registry
hives) and a Linux root (ext4), each behind an MBR, built on the host.

Registry hives are written by hivex (Debian ``libhivex-bin``: ``hivexsh -w``), which edits but
cannot create a hive: it starts from :func:`seed_hive`, the smallest valid hive (a base block
and one bin holding the root key and its security cell, as in hivex's own ``images/minimal``).
The NTFS volume is made by ``mkntfs`` and filled through an ``ntfs-3g`` mount (root and
/dev/fuse); the ext4 volume by ``mkfs.ext4 -d DIR`` (no mount).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.diskimage import PARTITION_OFFSET, mbr

DISK_SIGNATURE = 0x4E444550  # the master's own MBR disk signature ("PEDN")
VIRTIO_ID = "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4"  # the demo's qemu-virtio profile


def can_build_ntfs() -> str | None:
    """None when this host can build the NTFS master, else why not."""
    for tool in ("mkntfs", "ntfs-3g", "hivexsh"):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian: ntfs-3g, libhivex-bin)"
    if os.geteuid() != 0 or not Path("/dev/fuse").exists():
        return "mounting NTFS with ntfs-3g needs root and /dev/fuse"
    return None


def seed_hive(name: str) -> bytes:
    """An empty registry hive: base block + one 4 KiB bin with an sk cell and the root nk."""
    sd = struct.pack("<BBHIIII", 1, 0, 0x8000, 0, 0, 0, 0)  # self-relative, no owner/DACL
    sk_off = 0x20  # cell offsets count from the first bin
    sk = b"sk" + struct.pack("<HIIII", 0, sk_off, sk_off, 1, len(sd)) + sd
    sk_len = (4 + len(sk) + 7) & ~7
    nk_off = sk_off + sk_len
    root = b"ROOT"
    fields = (
        0x2C,  # flags: KEY_HIVE_ENTRY | KEY_NO_DELETE | KEY_COMP_NAME
        *(0, 0, 0, 0, 0),  # timestamp, access bits, parent, subkeys, volatile subkeys
        *(0xFFFFFFFF, 0xFFFFFFFF),  # no subkey lists
        *(0, 0xFFFFFFFF),  # no values
        *(sk_off, 0xFFFFFFFF),  # security cell, no class name
        *(0, 0, 0, 0, 0),  # max lengths, work var
        *(len(root), 0),  # name length, class length
    )
    nk = b"nk" + struct.pack("<HQIIIIIIIIIIIIIIIHH", *fields) + root
    nk_len = (4 + len(nk) + 7) & ~7
    cells = struct.pack("<i", -sk_len) + sk.ljust(sk_len - 4, b"\0")
    cells += struct.pack("<i", -nk_len) + nk.ljust(nk_len - 4, b"\0")
    free = 0x1000 - 0x20 - len(cells)
    cells += struct.pack("<i", free) + bytes(free - 4)
    hbin = b"hbin" + struct.pack("<IIQQI", 0, 0x1000, 0, 0, 0) + cells
    base = bytearray(4096)
    struct.pack_into("<4sIIQIIIIII", base, 0, b"regf", 1, 1, 0, 1, 3, 0, 1, nk_off, 0x1000)
    struct.pack_into("<I", base, 0x2C, 1)  # clustering factor
    fn = name.encode("utf-16-le")[:64]
    base[0x30 : 0x30 + len(fn)] = fn
    checksum = 0
    for i in range(127):
        checksum ^= struct.unpack_from("<I", base, i * 4)[0]
    struct.pack_into("<I", base, 0x1FC, checksum)
    return bytes(base) + hbin


Values = dict[str, str]  # value name -> hivexsh value spec ("string:x", "dword:0x1", "hex:3:..")


def write_hive(path: Path, keys: dict[str, Values]) -> None:
    """A hive at ``path`` holding ``keys`` ("A\\B\\C" -> values), written by hivexsh."""
    path.write_bytes(seed_hive(path.name))
    script = []
    for key in sorted(keys):  # parents first: _dedupe lists each key and its parents once
        parent, _, last = key.rpartition("\\")
        script += ["cd \\" + parent, f"add {last}", f"cd {last}"]
        values = keys[key]
        if values:
            script.append(f"setval {len(values)}")
            for name, spec in values.items():
                script += [name, spec]
    script.append("commit")
    with tempfile.NamedTemporaryFile("w", suffix=".hivexsh", delete=False) as fh:
        fh.write("\n".join(script) + "\n")
    try:
        subprocess.run(["hivexsh", "-w", "-f", fh.name, str(path)], check=True, capture_output=True)
    finally:
        os.unlink(fh.name)


def _dedupe(keys: dict[str, Values]) -> dict[str, Values]:
    """Every key and each of its parents once (hivexsh ``add`` refuses an existing key)."""
    out: dict[str, Values] = {}
    for key in sorted(keys):
        parts = key.split("\\")
        for i in range(1, len(parts)):
            out.setdefault("\\".join(parts[:i]), {})
        out[key] = {**out.get(key, {}), **keys[key]}
    return out


def _mounted(sig: int, letter: str) -> tuple[str, str]:
    data = struct.pack("<IQ", sig, PARTITION_OFFSET)
    return f"\\DosDevices\\{letter}:", "hex:3:" + ",".join(f"{b:02x}" for b in data)


@dataclass
class WindowsMaster:
    """What the master's registry says; every default is a clean, sealed master."""

    sysprep: str = "reseal"  # reseal | factory | none
    cluster_service: bool = False  # configured (ClusSvc started, a cluster named)
    shared_disks: list[str] = field(default_factory=list)  # letters on other disks
    sysprep_inf: bool = True
    computer_name: str = "MASTER"
    domain: str = "LAB"
    domain_member: bool | None = None  # None: no SECURITY hive; else PolPrDmS set or empty

    def security(self) -> dict[str, Values]:
        # LSA's primary domain SID (S-1-5-21-1-2-3 when joined), empty in a workgroup
        sid = "01,04,00,00,00,00,00,05,15,00,00,00,01,00,00,00,02,00,00,00,03,00,00,00"
        return _dedupe(
            {"Policy\\PolPrDmS": {"@": f"hex:0:{sid}" if self.domain_member else "hex:0:"}}
        )

    def system(self) -> dict[str, Values]:
        cs = "ControlSet001"
        setup = {
            "reseal": {
                "SystemSetupInProgress": "dword:0x1",
                "SetupType": "dword:0x1",
                "CmdLine": "string:setup -newsetup -mini",
                "MiniSetupInProgress": "dword:0x1",
            },
            "factory": {
                "SystemSetupInProgress": "dword:0x1",
                "SetupType": "dword:0x2",
                "CmdLine": "string:C:\\sysprep\\factory.exe -factory",
                "FactoryPreInstallInProgress": "dword:0x1",
            },
            "none": {"SystemSetupInProgress": "dword:0x0", "SetupType": "dword:0x0"},
        }[self.sysprep]
        keys: dict[str, Values] = {
            "Select": {"Current": "dword:0x1"},
            "Setup": setup,
            f"{cs}\\Control\\ComputerName\\ComputerName": {
                "ComputerName": f"string:{self.computer_name}"
            },
            f"{cs}\\Services\\ClusSvc": {
                "Start": "dword:0x2" if self.cluster_service else "dword:0x4",
                "DisplayName": "string:Cluster Service",
            },
            f"{cs}\\Services\\viostor": {"Group": "string:SCSI miniport", "Start": "dword:0x0"},
            f"{cs}\\Control\\CriticalDeviceDatabase\\" + VIRTIO_ID.lower().replace("\\", "#"): {
                "Service": "string:viostor"
            },
            f"{cs}\\Services\\Tcpip\\Parameters": {"Domain": "string:lab.example"},
            "MountedDevices": dict(
                [_mounted(DISK_SIGNATURE, "C")]
                + [_mounted(0x5EED0000 + i, x) for i, x in enumerate(self.shared_disks)]
            ),
        }
        if self.cluster_service:
            keys[f"{cs}\\Services\\ClusSvc\\Parameters"] = {
                "ClusterName": "string:SQLCLU",
                "NodeName": f"string:{self.computer_name}",
            }
        return _dedupe(keys)

    def software(self) -> dict[str, Values]:
        cv = "Microsoft\\Windows NT\\CurrentVersion"
        return _dedupe(
            {
                cv: {
                    "ProductName": "string:Microsoft Windows Server 2003",
                    "CurrentVersion": "string:5.2",
                    "CurrentBuildNumber": "string:3790",
                    "CSDVersion": "string:Service Pack 1",
                },
                f"{cv}\\Winlogon": {"DefaultDomainName": f"string:{self.domain}"},
                f"{cv}\\Cluster Server": {
                    "ClusterInstallationState": "dword:0x2" if self.cluster_service else "dword:0x1"
                },
            }
        )


def _disk(path: Path, volume: Path, size_mib: int, partition_type: int) -> None:
    total = size_mib * 1024 * 1024
    with open(path, "wb") as out:
        out.truncate(total)
        boot = bytearray(mbr(total, partition_type=partition_type))
        struct.pack_into("<I", boot, 440, DISK_SIGNATURE)
        out.write(boot)
        out.seek(PARTITION_OFFSET)
        with open(volume, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
    volume.unlink()


def make_windows_master(path: Path, master: WindowsMaster, size_mib: int = 24) -> Path:
    """An MBR disk whose NTFS partition holds WINDOWS\\system32\\config\\{SYSTEM,SOFTWARE}."""
    work = Path(tempfile.mkdtemp(prefix="master-", dir=path.parent))
    try:
        system, software = work / "SYSTEM", work / "SOFTWARE"
        write_hive(system, master.system())
        write_hive(software, master.software())
        security = work / "SECURITY"
        if master.domain_member is not None:
            write_hive(security, master.security())
        part = work / "part.ntfs"
        with open(part, "wb") as fh:
            fh.truncate(size_mib * 1024 * 1024 - PARTITION_OFFSET)
        geometry = ["-s", "512", "-p", str(PARTITION_OFFSET // 512), "-H", "255", "-S", "63"]
        subprocess.run(
            ["mkntfs", "-F", "-Q", "-q", *geometry, "-L", "SYSTEM", str(part)],
            check=True,
            capture_output=True,
        )
        mnt = work / "mnt"
        mnt.mkdir()
        subprocess.run(["ntfs-3g", str(part), str(mnt)], check=True, capture_output=True)
        try:
            config = mnt / "WINDOWS" / "system32" / "config"
            config.mkdir(parents=True)
            shutil.copy(system, config / "SYSTEM")
            shutil.copy(software, config / "SOFTWARE")
            if master.domain_member is not None:
                shutil.copy(security, config / "SECURITY")
            (mnt / "BOOT.INI").write_bytes(b"[boot loader]\r\ntimeout=0\r\n")
            if master.sysprep_inf:
                (mnt / "sysprep").mkdir()
                (mnt / "sysprep" / "sysprep.inf").write_bytes(b"[Unattended]\r\n")
            if master.cluster_service:
                (mnt / "WINDOWS" / "Cluster").mkdir()
                (mnt / "WINDOWS" / "Cluster" / "CLUSDB").write_bytes(seed_hive("CLUSDB"))
        finally:
            subprocess.run(["umount", str(mnt)], check=True, capture_output=True)
        _disk(path, part, size_mib, 0x07)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


@dataclass
class LinuxMaster:
    machine_id: str = ""  # "" = emptied, as `truncate -s0 /etc/machine-id` leaves it
    ssh_host_keys: bool = False
    cloud_init_state: bool = False


def make_linux_master(path: Path, master: LinuxMaster, size_mib: int = 24) -> Path:
    """An MBR disk whose ext4 partition is a small Linux root, made by ``mkfs.ext4 -d``."""
    work = Path(tempfile.mkdtemp(prefix="master-", dir=path.parent))
    try:
        root = work / "root"
        (root / "etc" / "ssh").mkdir(parents=True)
        (root / "etc" / "machine-id").write_text(master.machine_id)
        (root / "etc" / "hostname").write_text("master\n")
        (root / "etc" / "os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
        (root / "etc" / "ssh" / "sshd_config").write_text("PermitRootLogin no\n")
        if master.ssh_host_keys:
            (root / "etc" / "ssh" / "ssh_host_ed25519_key").write_text("secret\n")
        (root / "var" / "lib" / "cloud").mkdir(parents=True)
        if master.cloud_init_state:
            (root / "var" / "lib" / "cloud" / "instances" / "i-1").mkdir(parents=True)
        part = work / "part.ext4"
        with open(part, "wb") as fh:
            fh.truncate(size_mib * 1024 * 1024 - PARTITION_OFFSET)
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(part)],
            check=True,
            capture_output=True,
        )
        _disk(path, part, size_mib, 0x83)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path
