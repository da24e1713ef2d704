"""The boot code a held disk carries instead of its image's: print, wait, reboot (issue 21).

A held node's disk holds its complete, personalised image. If the node power-cycles while
netdeploy (or its database, or the boot network) is down, the firmware falls through to that
disk. So until release, the agent replaces the image's boot code with these stubs and keeps the
real code aside on the disk (docs/decisions/0011-hold-on-disk.md):

* :func:`bios_stub`: the 440 bytes of MBR boot code (the disk signature and partition table
  after them stay the image's). 16-bit real mode at 0x7c00.
* :func:`efi_stub`: an EFI application put in place of every ``EFI/*/*.efi`` loader of the
  image's EFI system partition (``EFI/BOOT/BOOTX64.EFI`` and, e.g., Windows'
  ``EFI/Microsoft/Boot/bootmgfw.efi``, which a firmware boot entry may name directly).

Both print :data:`HELD_MESSAGE`, wait 10 s and reboot, so the firmware asks the network again
(netdeploy's boot order puts the network first); they never chain to the real OS. They are
assembled here by hand, byte by byte with the instruction beside each, rather than by nasm or
gnu-efi at build time: a few dozen instructions, no toolchain on the build host, the same bytes
every time. tests/unit/test_holdstub.py disassembles them with objdump; the QEMU test
(tests/e2e/test_hold_on_disk.py) runs them under SeaBIOS and OVMF.
"""

from __future__ import annotations

import struct

HELD_MESSAGE = "held by netdeploy: waiting for release"
WAIT_S = 10
_DETAIL = (
    "This disk holds an image that must not start before netdeploy releases it.",
    f"Restarting in {WAIT_S} s to ask the network again.",
    "Stranded for good? See netdeploy's docs/rollout.md, 'Releasing a node by hand'.",
)
MBR_CODE_BYTES = 440  # then the disk signature (4), 2 reserved, the partition table, 55 aa
EFI_ERROR_NOT_FOUND = 0x8000_0000_0000_000E


def _text() -> str:
    return "\r\n" + HELD_MESSAGE + "\r\n" + "\r\n".join(_DETAIL) + "\r\n"


def bios_stub() -> bytes:
    """MBR boot code (440 bytes): print with INT 10h, wait with INT 15h, reset the machine."""
    at = 0x7C00  # the BIOS loads the MBR here and jumps to it (CS:IP 0000:7c00 in practice)
    message_offset = 0x30
    micros = WAIT_S * 1_000_000  # INT 15h AH=86h waits CX:DX microseconds
    code = bytes(
        [
            0xFA,  # 00 cli
            0x31, 0xC0,  # 01 xor ax, ax
            0x8E, 0xD8,  # 03 mov ds, ax
            0x8E, 0xD0,  # 05 mov ss, ax
            0xBC, 0x00, 0x7C,  # 07 mov sp, 0x7c00: a stack below us
            0xFB,  # 0a sti: INT 15h's wait needs the timer interrupt
            0xFC,  # 0b cld: lodsb counts up
            0xBE, *struct.pack("<H", at + message_offset),  # 0c mov si, message
            0xAC,  # 0f .print: lodsb (al = [ds:si++])
            0x08, 0xC0,  # 10 or al, al
            0x74, 0x09,  # 12 jz .wait (0x1d): the NUL ends the message
            0xB4, 0x0E,  # 14 mov ah, 0x0e: INT 10h teletype output
            0xBB, 0x07, 0x00,  # 16 mov bx, 0x0007: page 0, light grey
            0xCD, 0x10,  # 19 int 0x10 (SeaBIOS mirrors it to the serial console)
            0xEB, 0xF2,  # 1b jmp .print (0x0f)
            0xB4, 0x86,  # 1d .wait: mov ah, 0x86: INT 15h wait
            0xB9, *struct.pack("<H", micros >> 16),  # 1f mov cx, high word of the microseconds
            0xBA, *struct.pack("<H", micros & 0xFFFF),  # 22 mov dx, low word
            0xCD, 0x15,  # 25 int 0x15
            0xB0, 0xFE,  # 27 mov al, 0xfe: keyboard controller "pulse the reset line"
            0xE6, 0x64,  # 29 out 0x64, al: reboot; the firmware boots the network first
            0xEA, 0x00, 0x00, 0xFF, 0xFF,  # 2b jmp 0xffff:0000 (reset vector) if 0x64 is not wired
        ]
    )  # fmt: skip
    assert len(code) == message_offset
    stub = code + _text().encode("ascii") + b"\0"
    if len(stub) > MBR_CODE_BYTES:
        raise AssertionError(f"BIOS stub is {len(stub)} bytes, more than {MBR_CODE_BYTES}")
    return stub.ljust(MBR_CODE_BYTES, b"\0")


def efi_stub() -> bytes:
    """An x86-64 EFI application: ConOut->OutputString, BootServices->Stall(10 s),
    RuntimeServices->ResetSystem(cold); should the reset return, EFI_NOT_FOUND, so the firmware
    tries its next boot entry. Microsoft x64 calling convention: ImageHandle in rcx,
    SystemTable in rdx, 32 bytes of shadow space for every call."""
    message_at = 0x4A  # right after the code, 2-aligned for CHAR16
    code = bytes(
        [
            0x53,  # 00 push rbx (the stack is now 16-aligned)
            0x48, 0x83, 0xEC, 0x20,  # 01 sub rsp, 0x20: shadow space
            0x48, 0x89, 0xD3,  # 05 mov rbx, rdx: EFI_SYSTEM_TABLE*
            0x48, 0x8B, 0x4B, 0x40,  # 08 mov rcx, [rbx+0x40]: ->ConOut
            0x48, 0x8D, 0x15, *struct.pack("<i", message_at - 0x13),  # 0c lea rdx, [rip+message]
            0xFF, 0x51, 0x08,  # 13 call [rcx+0x08]: ConOut->OutputString(ConOut, message)
            0x48, 0x8B, 0x43, 0x60,  # 16 mov rax, [rbx+0x60]: ->BootServices
            0xB9, *struct.pack("<I", WAIT_S * 1_000_000),  # 1a mov ecx, microseconds
            0xFF, 0x90, 0xF8, 0x00, 0x00, 0x00,  # 1f call [rax+0xf8]: BootServices->Stall
            0x48, 0x8B, 0x43, 0x58,  # 25 mov rax, [rbx+0x58]: ->RuntimeServices
            0xB9, 0x00, 0x00, 0x00, 0x00,  # 29 mov ecx, 0: EfiResetCold
            0x31, 0xD2,  # 2e xor edx, edx: EFI_SUCCESS
            0x45, 0x31, 0xC0,  # 30 xor r8d, r8d: no reset data
            0x45, 0x31, 0xC9,  # 33 xor r9d, r9d
            0xFF, 0x50, 0x68,  # 36 call [rax+0x68]: RuntimeServices->ResetSystem
            0x48, 0xB8, *struct.pack("<Q", EFI_ERROR_NOT_FOUND),  # 39 mov rax, EFI_NOT_FOUND
            0x48, 0x83, 0xC4, 0x20,  # 43 add rsp, 0x20
            0x5B,  # 47 pop rbx
            0xC3,  # 48 ret
            0x90,  # 49 nop: pad to message_at
        ]
    )  # fmt: skip
    assert len(code) == message_at
    return pe32plus(code + _text().encode("utf-16-le") + b"\0\0")


def pe32plus(text: bytes, *, subsystem: int = 10) -> bytes:
    """A PE32+ image for x86-64 with one section (code and data) at RVA 0x1000, entered at its
    first byte. No relocations: the code is position independent (rip-relative), and
    IMAGE_FILE_RELOCS_STRIPPED stays clear so the firmware may load it anywhere. ``subsystem``
    10 is EFI_APPLICATION."""
    file_align, section_align, rva = 0x200, 0x1000, 0x1000
    raw_size = -(-len(text) // file_align) * file_align
    image_size = rva + -(-len(text) // section_align) * section_align
    dos = bytearray(0x40)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)  # e_lfanew: where the PE header is
    coff = struct.pack(
        "<HHIIIHH",
        0x8664,  # Machine: x86-64
        1,  # NumberOfSections
        0,  # TimeDateStamp: 0, so the same bytes every build
        0,  # PointerToSymbolTable
        0,  # NumberOfSymbols
        240,  # SizeOfOptionalHeader (PE32+ with 16 data directories)
        0x0022,  # EXECUTABLE_IMAGE | LARGE_ADDRESS_AWARE
    )
    optional = struct.pack(
        "<HBBIIIIIQIIHHHHHHIIIIHHQQQQII",
        0x20B,  # Magic: PE32+
        0,  # MajorLinkerVersion
        0,  # MinorLinkerVersion
        raw_size,  # SizeOfCode
        0,  # SizeOfInitializedData
        0,  # SizeOfUninitializedData
        rva,  # AddressOfEntryPoint
        rva,  # BaseOfCode
        0x10000000,  # ImageBase (preferred; relocatable anyway)
        section_align,
        file_align,
        0, 0, 0, 0, 0, 0,  # OS, image and subsystem versions
        0,  # Win32VersionValue
        image_size,  # SizeOfImage
        file_align,  # SizeOfHeaders
        0,  # CheckSum (firmware does not check it)
        subsystem,
        0,  # DllCharacteristics
        0x100000, 0x1000, 0x100000, 0x1000,  # stack and heap reserve/commit
        0,  # LoaderFlags
        16,  # NumberOfRvaAndSizes: all empty (no imports, relocations, ...)
    ) + bytes(16 * 8)  # fmt: skip
    section = struct.pack(
        "<8sIIIIIIHHI",
        b".text",
        len(text),  # VirtualSize
        rva,  # VirtualAddress
        raw_size,  # SizeOfRawData
        file_align,  # PointerToRawData
        0,  # PointerToRelocations
        0,  # PointerToLinenumbers
        0,  # NumberOfRelocations
        0,  # NumberOfLinenumbers
        0x60000020,  # CODE | EXECUTE | READ
    )
    headers = bytes(dos) + b"PE\0\0" + coff + optional + section
    assert len(optional) == 240 and len(headers) <= file_align
    return headers.ljust(file_align, b"\0") + text.ljust(raw_size, b"\0")


# Where the agent finds them in the initramfs (netdeploy.media.build puts them there).
STUB_FILES = {"lib/netdeploy/hold-mbr.bin": bios_stub, "lib/netdeploy/hold-x64.efi": efi_stub}
