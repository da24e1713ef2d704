"""Build a small but real master image for end-to-end tests.

Layout: an MBR whose boot code prints ``NETDEPLOY-LOCAL-DISK-BOOT`` through the BIOS (SeaBIOS
mirrors it to the serial console) and then exits QEMU through the ``isa-debug-exit`` device, and
one FAT partition from 1 MiB holding a few files, like a sysprep'd system partition. When a test
sees that marker, the machine has booted its local disk.

The FAT partition also holds ``EFI/BOOT/BOOTX64.EFI`` (the removable-media path UEFI firmware
boots from a disk without boot entries): a tiny PE32+ EFI application that prints
``NETDEPLOY-LOCAL-DISK-BOOT-EFI`` on COM1 and exits QEMU the same way, so one image proves a
local boot under SeaBIOS and under OVMF.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from pathlib import Path

from netdeploy.media.holdstub import pe32plus
from tests.conftest import sha256_of

LOCAL_BOOT_MARKER = "NETDEPLOY-LOCAL-DISK-BOOT"
EFI_BOOT_MARKER = LOCAL_BOOT_MARKER + "-EFI"
EFI_BOOT_PATH = "EFI/BOOT/BOOTX64.EFI"
PARTITION_OFFSET = 1024 * 1024  # bytes; mtools addresses it as IMAGE@@1M


def boot_code() -> bytes:
    """16-bit real-mode code at 0x7c00: write the marker to COM1, then outb to 0xf4 (exit)."""
    message = (LOCAL_BOOT_MARKER + "\r\n").encode() + b"\0"
    code = bytes(
        [
            0xFA,  # cli
            0x31,
            0xC0,  # xor ax, ax
            0x8E,
            0xD8,  # mov ds, ax
            0xBE,
            0x20,
            0x7C,  # mov si, 0x7c20 (message)
            0xFC,  # cld
            0xAC,  # .loop: lodsb
            0x08,
            0xC0,  # or al, al
            0x74,
            0x06,  # jz .done
            0xBA,
            0xF8,
            0x03,  # mov dx, 0x3f8 (COM1 data)
            0xEE,  # out dx, al
            0xEB,
            0xF5,  # jmp .loop
            0xB0,
            0x01,  # .done: mov al, 1
            0xBA,
            0xF4,
            0x00,  # mov dx, 0xf4 (isa-debug-exit: QEMU exits with status 3)
            0xEE,  # out dx, al
            0xF4,  # hlt
            0xEB,
            0xFE,  # jmp $
            0x90,
            0x90,
            0x90,  # pad to 0x20
        ]
    )
    assert len(code) == 0x20
    return code + message


def efi_boot_app() -> bytes:
    """A PE32+ EFI application (x86-64): write the EFI marker to COM1, then exit QEMU through
    ``isa-debug-exit``. Position-independent (RIP-relative), so it needs no relocations."""
    message = (EFI_BOOT_MARKER + "\r\n").encode() + b"\0"
    body = bytes(
        [
            0x66, 0xBA, 0xF8, 0x03,  # mov dx, 0x3f8 (COM1 data)
            0xAC,  # .loop: lodsb
            0x84, 0xC0,  # test al, al
            0x74, 0x03,  # jz .done
            0xEE,  # out dx, al
            0xEB, 0xF8,  # jmp .loop
            0xB0, 0x01,  # .done: mov al, 1
            0x66, 0xBA, 0xF4, 0x00,  # mov dx, 0xf4 (isa-debug-exit: QEMU exits with status 3)
            0xEE,  # out dx, al
            0xF4,  # .halt: hlt
            0xEB, 0xFD,  # jmp .halt
        ]
    )  # fmt: skip
    lea = b"\x48\x8d\x35" + struct.pack("<i", len(body))  # lea rsi, [rip + message]
    text = (lea + body + message).ljust(0x200, b"\0")
    optional = struct.pack(
        "<HBBIIIIIQIIHHHHHHIIIIHHQQQQII",
        0x20B,  # PE32+
        0, 0, len(text), 0, 0,
        0x1000,  # AddressOfEntryPoint
        0x1000,  # BaseOfCode
        0x10000000,  # ImageBase (loaded anywhere: the code is position-independent)
        0x1000, 0x200,  # section and file alignment
        0, 0, 0, 0, 0, 0, 0,
        0x2000,  # SizeOfImage
        0x200,  # SizeOfHeaders
        0,
        10,  # Subsystem: EFI application
        0,
        0x10000, 0x1000, 0x10000, 0x1000, 0,
        16,  # NumberOfRvaAndSizes (all empty: no imports, no relocations)
    ) + bytes(16 * 8)  # fmt: skip
    assert len(optional) == 240
    coff = struct.pack("<HHIIIHH", 0x8664, 1, 0, 0, 0, len(optional), 0x0022)
    section = struct.pack(
        "<8sIIIIIIHHI", b".text", len(text), 0x1000, len(text), 0x200, 0, 0, 0, 0, 0x60000020
    )
    dos = bytearray(0x40)
    dos[0:2] = b"MZ"
    dos[0x3C:0x40] = struct.pack("<I", 0x40)
    headers = (bytes(dos) + b"PE\0\0" + coff + optional + section).ljust(0x200, b"\0")
    return headers + text


def mbr(total_bytes: int, partition_type: int = 0x0E) -> bytes:
    """Boot sector printing the local-boot marker and one active partition from 1 MiB to the
    end: FAT16 LBA (0x0E) by default, 0x07 for NTFS; CHS fields unused."""
    sectors = total_bytes // 512
    start = PARTITION_OFFSET // 512
    entry = struct.pack(
        "<B3sB3sII", 0x80, b"\xfe\xff\xff", partition_type, b"\xfe\xff\xff", start, sectors - start
    )
    sector = bytearray(512)
    code = boot_code()
    sector[: len(code)] = code
    sector[446:462] = entry
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def efi_marker_app() -> bytes:
    """The UEFI counterpart of :func:`boot_code`: an x86-64 EFI application that writes the
    marker to COM1 and exits QEMU through isa-debug-exit (status 3); no firmware calls."""
    message = (LOCAL_BOOT_MARKER + "\r\n").encode() + b"\0"
    code = bytes(
        [
            0x48, 0x8D, 0x35, *struct.pack("<i", 0x1D - 0x07),  # 00 lea rsi, [rip+message]
            0xAC,  # 07 .loop: lodsb
            0x84, 0xC0,  # 08 test al, al
            0x74, 0x07,  # 0a jz .done (0x13)
            0x66, 0xBA, 0xF8, 0x03,  # 0c mov dx, 0x3f8 (COM1 data)
            0xEE,  # 10 out dx, al
            0xEB, 0xF4,  # 11 jmp .loop
            0xB0, 0x01,  # 13 .done: mov al, 1
            0x66, 0xBA, 0xF4, 0x00,  # 15 mov dx, 0xf4 (isa-debug-exit: QEMU exits with 3)
            0xEE,  # 19 out dx, al
            0xF4,  # 1a hlt
            0xEB, 0xFD,  # 1b jmp 0x1a
        ]
    )  # fmt: skip
    assert len(code) == 0x1D
    return pe32plus(code + message)


def make_image(
    path: Path, size_mib: int = 64, seed: bytes = b"netdeploy", *, efi: bool = False
) -> dict:
    """Write the image; return the files it holds (name -> bytes) and its sha256 and size.

    ``efi``: the FAT partition also holds ``EFI/BOOT/BOOTX64.EFI`` (:func:`efi_marker_app`), so
    the image boots under OVMF too, printing the same marker."""
    total = size_mib * 1024 * 1024
    with open(path, "wb") as fh:
        fh.truncate(total)
        fh.write(mbr(total))
    subprocess.run(
        [
            "mkfs.vfat",
            "-F",
            "16",
            "-n",
            "SYSTEM",
            "--offset",
            str(PARTITION_OFFSET // 512),
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    rng = hashlib.sha256(seed).digest()
    files = {
        "WINDOWS/SYSTEM32/CONFIG/SYSTEM": os.urandom(0) + (rng * 4096 * 64)[: 8 * 1024 * 1024],
        "WINDOWS/SYSTEM32/BIG.DLL": bytes(range(256)) * 16384,
        "BOOT.INI": b"[boot loader]\r\ntimeout=0\r\n",
        "sysprep/README.TXT": b"sysprep -reseal -mini was run on the master\r\n",
        EFI_BOOT_PATH: efi_boot_app(),
    }
    if efi:
        files["EFI/BOOT/BOOTX64.EFI"] = efi_marker_app()
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for name, data in files.items():
        parts = name.split("/")
        for i in range(1, len(parts)):
            subprocess.run(
                ["mmd", "-D", "s", "-i", f"{path}@@1M", "::/" + "/".join(parts[:i])],
                env=env,
                capture_output=True,
            )
        local = path.parent / ".mcopy.tmp"
        local.write_bytes(data)
        subprocess.run(
            ["mcopy", "-o", "-i", f"{path}@@1M", str(local), "::/" + name],
            env=env,
            check=True,
            capture_output=True,
        )
        local.unlink()
    digest = sha256_of(path)
    return {"files": files, "sha256": digest, "size": total}


def read_file(image: Path, name: str) -> bytes | None:
    """A file from the image's FAT partition, or None when it is absent."""
    done = subprocess.run(
        ["mtype", "-i", f"{image}@@1M", "::/" + name],
        capture_output=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )
    return done.stdout if done.returncode == 0 else None


def blank_disk(path: Path, size_mib: int = 80) -> Path:
    """An empty (sparse) target disk for a guest."""
    with open(path, "wb") as fh:
        fh.truncate(size_mib * 1024 * 1024)
    return path
