"""Which boot program a machine's firmware gets: the boot decision, spoken to PXE firmware.

ProxyDHCP (netdeploy.dhcp) parses the request and builds the reply; what goes in it comes from
here, from the same :class:`~netdeploy.boot.plan.BootPlan` that decides the HTTP and TFTP boot
answers (decision 0009). Every network boot ends in the same place, ``<public_url>/boot.ipxe``,
which asks the boot plan per MAC; firmware that is not yet iPXE first gets an iPXE build it can
run, so there is exactly one chainload and never a loop. A machine whose plan is its local disk
gets no answer at all (pixiecore's ``Booter`` returning nil): its firmware boots its next device.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from netdeploy.boot.plan import BootAction, BootPlan

# Where `netdeploy media build` puts Debian's iPXE programs, relative to the bootfiles root:
# the TFTP root, and <public_url>/bootfiles/ over HTTP (docs/agent.md).
BIOS_PROGRAM = "media/undionly.kpxe"  # uses the PXE ROM's UNDI driver
UEFI_PROGRAM = "media/snponly.efi"  # uses the firmware's SNP driver
UEFI_HTTP_PROGRAM = "media/ipxe.efi"  # UEFI HTTP boot: the URL of this one

# RFC 4578 §2.1 and the IANA "Processor Architecture Types" registry
ARCH_NAMES = {
    0: "x86 BIOS",
    1: "NEC/PC98",
    2: "Itanium",
    3: "DEC Alpha",
    4: "Arc x86",
    5: "Intel Lean Client",
    6: "x86 UEFI",
    7: "x64 UEFI",
    8: "EFI Xscale",
    9: "EBC",  # x64 UEFI firmware of some vendors (EDK2 before 2013) sends 9 for x64
    10: "ARM 32-bit UEFI",
    11: "ARM 64-bit UEFI",
    15: "x86 UEFI HTTP",
    16: "x64 UEFI HTTP",
    17: "EBC UEFI HTTP",
    18: "ARM 32-bit UEFI HTTP",
    19: "ARM 64-bit UEFI HTTP",
}
BIOS_ARCHES = {0}
UEFI_X64_ARCHES = {7, 9}
UEFI_HTTP_X64_ARCHES = {16}
HTTP_ARCHES = {15, 16, 17, 18, 19}


class Firmware(StrEnum):
    BIOS = "bios"  # a BIOS PXE ROM that is not iPXE
    UEFI = "uefi"  # UEFI firmware's own PXE client (TFTP)
    UEFI_HTTP = "uefi-http"  # UEFI HTTP boot
    IPXE = "ipxe"  # already iPXE (a NIC ROM, or the iPXE we just handed out)


@dataclass(frozen=True)
class FirmwareClient:
    """What a network-boot client told us about itself, in an admin's words."""

    mac: str
    firmware: Firmware
    arch: int
    arch_name: str
    arch_from: str  # "option 93", "vendor class" or "default" (sent neither)


@dataclass(frozen=True)
class BootChoice:
    """The program a client should load next, or None with the reason we stay silent."""

    boot_file: str | None  # TFTP path or URL
    via: str  # "tftp" | "http" | ""
    why: str


def boot_program(client: FirmwareClient, plan: BootPlan | None, public_url: str) -> BootChoice:
    """Which program this firmware runs now; ``plan`` is the MAC's boot plan (None: not asked).

    A LOCAL plan is answered with silence, the same decision HTTP (``sanboot``/``exit``) and
    TFTP (``LOCALBOOT``) give: the firmware falls through to its disk.
    """
    if plan is not None and plan.action == BootAction.LOCAL:
        return BootChoice(
            None, "", f"boot plan: {plan.why}; no answer, so the firmware boots its next device"
        )
    fw = client.firmware
    if fw is Firmware.IPXE:
        return BootChoice(
            f"{public_url}/boot.ipxe",
            "http",
            "client is iPXE (option 175 or user class iPXE): the first stage, which asks "
            "the boot plan per MAC; no chainload, so no loop",
        )
    if fw is Firmware.UEFI_HTTP:
        if client.arch not in UEFI_HTTP_X64_ARCHES:
            return BootChoice(None, "", _unsupported(client, "UEFI HTTP boot"))
        return BootChoice(
            f"{public_url}/bootfiles/{UEFI_HTTP_PROGRAM}",
            "http",
            f"UEFI HTTP boot ({client.arch_name}): iPXE for UEFI, which then runs /boot.ipxe",
        )
    if fw is Firmware.BIOS:
        return BootChoice(
            BIOS_PROGRAM,
            "tftp",
            "BIOS PXE ROM, not iPXE: chainload iPXE (undionly.kpxe over TFTP), "
            "which then runs /boot.ipxe",
        )
    if client.arch not in UEFI_X64_ARCHES:
        return BootChoice(None, "", _unsupported(client, "UEFI PXE"))
    return BootChoice(
        UEFI_PROGRAM,
        "tftp",
        f"UEFI PXE firmware ({client.arch_name}), not iPXE: chainload iPXE "
        "(snponly.efi over TFTP), which then runs /boot.ipxe",
    )


def _unsupported(client: FirmwareClient, what: str) -> str:
    return (
        f"no boot program for {what} on {client.arch_name} (arch {client.arch}, from "
        f"{client.arch_from}); the media hold x86 iPXE only, so no answer: the firmware "
        "tries its next boot device"
    )
