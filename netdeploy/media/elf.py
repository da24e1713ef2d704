"""What a dynamically linked program needs at run time: its loader (PT_INTERP) and DT_NEEDED.

Read from the ELF file itself (System V gABI, "Program Header" and "Dynamic Section"), so the
media builder never runs a binary from a downloaded package (as ``ldd`` would) and needs no
binutils. Only 64-bit little-endian ELF is read: the media's kernel is amd64.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB = 0, 1, 5


class NotElf(ValueError):
    """The bytes are not a 64-bit little-endian ELF file this reader understands."""


@dataclass(frozen=True)
class Linkage:
    interpreter: str | None  # e.g. /lib64/ld-linux-x86-64.so.2; None for static programs
    needed: tuple[str, ...]  # DT_NEEDED sonames, in file order


def _cstring(data: bytes, offset: int) -> str:
    end = data.index(b"\0", offset)
    return data[offset:end].decode()


def linkage(data: bytes) -> Linkage:
    """The loader and the shared libraries an ELF executable or library asks for."""
    try:
        return _linkage(data)
    except NotElf:
        raise
    except (struct.error, ValueError) as exc:  # offsets past the end, unterminated or bad names
        raise NotElf(f"truncated or damaged ELF file ({exc})") from None


def _linkage(data: bytes) -> Linkage:
    if data[:4] != b"\x7fELF" or len(data) < 64:
        raise NotElf("not an ELF file")
    if data[4] != 2 or data[5] != 1:  # EI_CLASS = ELFCLASS64, EI_DATA = ELFDATA2LSB
        raise NotElf("not a 64-bit little-endian ELF file")
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads: list[tuple[int, int, int]] = []  # (vaddr, filesz, offset)
    interpreter, dynamic = None, None
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize
        )
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_filesz, p_offset))
        elif p_type == PT_INTERP:
            interpreter = _cstring(data, p_offset)
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return Linkage(interpreter, ())
    needed_offsets: list[int] = []
    strtab_vaddr = None
    offset, size = dynamic
    for pos in range(offset, offset + size, 16):
        tag, value = struct.unpack_from("<qQ", data, pos)
        if tag == DT_NULL:
            break
        if tag == DT_NEEDED:
            needed_offsets.append(value)
        elif tag == DT_STRTAB:
            strtab_vaddr = value
    if strtab_vaddr is None:
        raise NotElf("dynamic section without a string table")
    # DT_STRTAB is an address in memory: map it back to the file through its PT_LOAD segment
    for vaddr, filesz, file_offset in loads:
        if vaddr <= strtab_vaddr < vaddr + filesz:
            strtab = strtab_vaddr - vaddr + file_offset
            break
    else:
        raise NotElf("string table outside every loaded segment")
    return Linkage(interpreter, tuple(_cstring(data, strtab + n) for n in needed_offsets))
