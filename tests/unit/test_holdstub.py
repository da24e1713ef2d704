"""The hold stubs (netdeploy/media/holdstub.py): the bytes are what their comments say.

objdump (binutils) disassembles them; the QEMU test (tests/e2e/test_hold_on_disk.py) runs them
under SeaBIOS and OVMF.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from netdeploy.media.holdstub import HELD_MESSAGE, MBR_CODE_BYTES, bios_stub, efi_stub

needs_objdump = pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils")


def instructions(dump: str) -> list[str]:
    """Mnemonics and operands, one per line, from objdump -d output."""
    found = []
    for line in dump.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and re.match(r"^\s*[0-9a-f]+:$", parts[0]):
            found.append(re.sub(r"\s+", " ", parts[2]).strip())
    return found


def test_the_bios_stub_fits_the_mbr_boot_code_and_says_held() -> None:
    stub = bios_stub()
    assert len(stub) == MBR_CODE_BYTES  # disk signature and partition table stay the image's
    assert HELD_MESSAGE.encode() in stub
    text = stub[0x30:].split(b"\0")[0]
    assert text.startswith(b"\r\n" + HELD_MESSAGE.encode())


@needs_objdump
def test_the_bios_stub_prints_waits_and_resets(tmp_path: Path) -> None:
    path = tmp_path / "mbr.bin"
    path.write_bytes(bios_stub())
    dump = subprocess.run(
        [
            *("objdump", "-D", "-b", "binary", "-m", "i8086"),
            *("--adjust-vma=0x7c00", "--stop-address=0x7c30", str(path)),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert instructions(dump) == [
        "cli",
        "xor %ax,%ax",
        "mov %ax,%ds",
        "mov %ax,%ss",
        "mov $0x7c00,%sp",
        "sti",
        "cld",
        "mov $0x7c30,%si",
        "lods %ds:(%si),%al",
        "or %al,%al",
        "je 0x7c1d",
        "mov $0xe,%ah",
        "mov $0x7,%bx",
        "int $0x10",
        "jmp 0x7c0f",
        "mov $0x86,%ah",
        "mov $0x98,%cx",
        "mov $0x9680,%dx",
        "int $0x15",
        "mov $0xfe,%al",
        "out %al,$0x64",
        "ljmp $0xffff,$0x0",
    ]


def test_the_efi_stub_is_a_pe32plus_efi_application() -> None:
    image = efi_stub()
    assert image[:2] == b"MZ"
    pe = struct.unpack_from("<I", image, 0x3C)[0]
    assert image[pe : pe + 4] == b"PE\0\0"
    machine, sections = struct.unpack_from("<HH", image, pe + 4)
    assert (machine, sections) == (0x8664, 1)
    optional = pe + 24
    assert struct.unpack_from("<H", image, optional)[0] == 0x20B  # PE32+
    assert struct.unpack_from("<H", image, optional + 68)[0] == 10  # EFI application
    assert HELD_MESSAGE.encode("utf-16-le") in image


@needs_objdump
def test_the_efi_stub_prints_stalls_and_resets(tmp_path: Path) -> None:
    path = tmp_path / "stub.efi"
    path.write_bytes(efi_stub())
    info = subprocess.run(["objdump", "-x", str(path)], capture_output=True, text=True).stdout
    assert "pei-x86-64" in info and "(EFI application)" in info
    dump = subprocess.run(
        ["objdump", "-d", str(path)], capture_output=True, text=True, check=True
    ).stdout
    code = instructions(dump)
    calls = [i for i in code if i.startswith("call")]
    # ConOut->OutputString, BootServices->Stall, RuntimeServices->ResetSystem
    assert calls == ["call *0x8(%rcx)", "call *0xf8(%rax)", "call *0x68(%rax)"]
    assert "mov 0x40(%rbx),%rcx" in code  # SystemTable->ConOut
    assert "mov $0x989680,%ecx" in code  # 10 s
    assert "movabs $0x800000000000000e,%rax" in code  # EFI_NOT_FOUND if the reset returns
    assert code.index("ret") > code.index("call *0x68(%rax)")
