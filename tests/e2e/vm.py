"""Run one QEMU guest for a test: TCG, iPXE NIC ROM, slirp networking (or a tap on the test
LAN of tests/e2e/lan.py), serial log with times.

KVM is present on these machines but unusable (no nested VMX), so guests run under TCG; see
../shared/RECIPES.md. Under slirp the guest sees the host's loopback as 10.0.2.2.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")  # Debian package ovmf
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")


def qemu_available() -> str | None:
    """None when QEMU and the iPXE NIC ROMs are installed, else why not."""
    if shutil.which(QEMU) is None:
        return "qemu-system-x86_64 not installed (Debian: qemu-system-x86)"
    if not Path("/usr/lib/ipxe/qemu/efi-virtio.rom").exists():
        return "iPXE NIC ROMs not installed (Debian: ipxe-qemu)"
    return None


def ovmf_available() -> str | None:
    """None when OVMF (UEFI firmware for QEMU) is installed, else why not."""
    if not (OVMF_CODE.exists() and OVMF_VARS.exists()):
        return "OVMF not installed (Debian: ovmf)"
    return None


@dataclass
class VM:
    name: str
    mac: str
    log: Path
    disk: Path | None = None
    bootfile: str = ""
    memory: int = 512
    tap: str = ""  # a tap in ``netns`` (tests/e2e/lan.py) instead of slirp
    netns: str = ""
    uefi: bool = False  # OVMF instead of SeaBIOS (RECIPES t3c/t3d)
    # False: no option ROM on the NIC (``romfile=``), so the firmware's own PXE client boots
    # instead of QEMU's iPXE (under UEFI only: QEMU's only BIOS PXE ROMs are iPXE)
    nic_rom: bool = True
    # a bootindex for the disk: under OVMF it then comes right after the network entries,
    # before the EFI shell (which otherwise waits at its prompt for good)
    disk_bootindex: int | None = None
    extra: tuple[str, ...] = ()  # more QEMU arguments (e.g. -fw_cfg for OVMF)
    # the disk's controller: "virtio" (virtio-blk, PCI 1af4:1001) or "ahci" (ICH9 AHCI,
    # 8086:2922): the agent reports each as a different storage controller (issue 18)
    storage: str = "virtio"
    lines: list[tuple[float, str]] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    started: float = 0.0

    def command(self) -> list[str]:
        netdev = "user,id=n0" + (f",bootfile={self.bootfile}" if self.bootfile else "")
        if self.tap:  # the LAN's DHCP server says what to boot
            netdev = f"tap,id=n0,ifname={self.tap},script=no,downscript=no"
        cmd = ["ip", "netns", "exec", self.netns] if self.netns else []
        cmd += [
            QEMU,
            "-accel",
            "tcg",
            "-m",
            str(self.memory),
            "-nographic",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-netdev",
            netdev,
        ]
        nic = f"virtio-net-pci,netdev=n0,mac={self.mac}" + ("" if self.nic_rom else ",romfile=")
        if self.uefi:  # OVMF boots by bootindex; -boot order is a BIOS option
            vars_copy = self.log.with_name(f"{self.name}-OVMF_VARS.fd")
            shutil.copyfile(OVMF_VARS, vars_copy)
            cmd += [
                "-drive",
                f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                "-drive",
                f"if=pflash,format=raw,file={vars_copy}",
                "-device",
                nic + ",bootindex=1",
                # no PXE over IPv6 (the test LANs are IPv4): spares OVMF a long wait per boot
                "-fw_cfg",
                "name=opt/org.tianocore/IPv6PXESupport,string=n",
            ]
        else:
            cmd += ["-boot", "order=nc", "-device", nic]
        if self.disk and self.storage == "ahci":
            cmd += [
                "-device",
                "ahci,id=ahci0",
                "-drive",
                f"if=none,id=d0,file={self.disk},format=raw",
                "-device",
                "ide-hd,drive=d0,bus=ahci0.0",
            ]
        elif self.disk and (self.uefi or self.disk_bootindex is not None):
            # under OVMF the disk is the next boot entry after the NIC, before the EFI shell
            # (which otherwise waits at its prompt for good)
            index = 2 if self.disk_bootindex is None else self.disk_bootindex
            cmd += [
                "-drive",
                f"file={self.disk},format=raw,if=none,id=disk0",
                "-device",
                f"virtio-blk-pci,drive=disk0,bootindex={index}",
            ]
        elif self.disk:
            cmd += ["-drive", f"file={self.disk},format=raw,if=virtio"]
        return [*cmd, *self.extra]

    async def serial_until_exit(self, timeout: float) -> str:
        """Run the guest as an asyncio subprocess, for tests whose server shares this event
        loop (``start``/``wait`` would block it); the serial output once QEMU exits."""
        proc = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(timeout):
                out, _ = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return out.decode(errors="replace")

    def start(self) -> VM:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        with open(self.log, "a", encoding="utf-8") as out:
            for raw in self.proc.stdout:
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                stamp = time.monotonic() - self.started
                self.lines.append((stamp, text))
                out.write(f"[{stamp:7.2f}] {text}\n")
                out.flush()

    def wait(self, timeout: float) -> int:
        """Wait for QEMU to exit; kill it (only it) after ``timeout`` seconds."""
        assert self.proc
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(
                f"{self.name} still running after {timeout:.0f}s; serial log: {self.log}"
            ) from None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def saw(self, text: str) -> bool:
        return any(text in line for _, line in self.lines)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"  # gitignored


def keep_serial_logs(vms: list[VM], prefix: str = "e2e-") -> None:
    """Copy each guest's time-stamped serial log to test-artifacts/{prefix}{name}.log for a
    human to read after the run (a guest that never started has none)."""
    ARTIFACTS.mkdir(exist_ok=True)
    for vm in vms:
        if vm.log.exists():
            shutil.copy(vm.log, ARTIFACTS / f"{prefix}{vm.name}.log")
