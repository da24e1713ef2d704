"""Bitmaps of slices: what a receiver holds, what each receiver still misses. Pure.

Bit ``i`` of a bitmap is byte ``i // 8``, mask ``0x80 >> (i % 8)`` (most significant bit
first), the same order NAK datagrams carry on the wire.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from netdeploy.multicast.wire import NAK_WINDOW

_INVERT = bytes(255 - b for b in range(256))
_NONZERO = re.compile(rb"[^\x00]")
_POPCOUNT = [bin(b).count("1") for b in range(256)]


def _tail_mask(nbits: int) -> int:
    """Mask of the valid bits in the last byte of an ``nbits``-bit bitmap."""
    rest = nbits % 8
    return 0xFF if rest == 0 else (0xFF << (8 - rest)) & 0xFF


def set_bits(bitmap: bytes | bytearray, offset: int = 0) -> Iterator[int]:
    """Indices of the set bits, plus ``offset``; zero bytes are skipped at C speed."""
    for match in _NONZERO.finditer(bitmap):
        byte, base = match.group()[0], offset + match.start() * 8
        for bit in range(8):
            if byte & (0x80 >> bit):
                yield base + bit


def runs(indices: Iterable[int]) -> list[tuple[int, int]]:
    """Ascending indices as ``[first, end)`` runs."""
    out: list[tuple[int, int]] = []
    for index in indices:
        if out and out[-1][1] == index:
            out[-1] = (out[-1][0], index + 1)
        else:
            out.append((index, index + 1))
    return out


class SliceMap:
    """The slices a receiver has written (and checked); says what to NAK."""

    def __init__(self, slices: int):
        self.slices = slices
        self.bits = bytearray((slices + 7) // 8)
        self.received = 0

    def has(self, index: int) -> bool:
        return bool(self.bits[index >> 3] & (0x80 >> (index & 7)))

    def add(self, index: int) -> bool:
        """Mark ``index`` received; False if it already was (a repeat or a repair for others)."""
        mask = 0x80 >> (index & 7)
        if self.bits[index >> 3] & mask:
            return False
        self.bits[index >> 3] |= mask
        self.received += 1
        return True

    @property
    def missing(self) -> int:
        return self.slices - self.received

    @property
    def complete(self) -> bool:
        return self.received == self.slices

    def nak_windows(self, window: int = NAK_WINDOW) -> Iterator[tuple[int, int, bytes]]:
        """``(base, nbits, missing-bitmap)`` for each window that misses at least one slice."""
        assert window % 8 == 0
        for base in range(0, self.slices, window):
            nbits = min(window, self.slices - base)
            chunk = bytearray(self.bits[base // 8 : (base + nbits + 7) // 8].translate(_INVERT))
            chunk[-1] &= _tail_mask(nbits)
            if any(chunk):
                yield base, nbits, bytes(chunk)

    def missing_ranges(self) -> list[tuple[int, int]]:
        """Missing slices as ``[first, end)`` runs, in order (for unicast fetches)."""
        return runs(
            index for base, _nbits, chunk in self.nak_windows() for index in set_bits(chunk, base)
        )


class MissingMap:
    """What one receiver reported missing, window by window (the sender's view of it)."""

    def __init__(self, slices: int):
        self.slices = slices
        self.bits = bytearray((slices + 7) // 8)

    def clear(self) -> None:
        self.bits[:] = bytes(len(self.bits))

    def apply(self, base: int, nbits: int, bitmap: bytes) -> None:
        """Replace the window ``[base, base+nbits)`` by a NAK's bitmap (idempotent)."""
        if base % 8 or base + nbits > self.slices or len(bitmap) != (nbits + 7) // 8:
            raise ValueError(f"NAK window [{base}, {base + nbits}) does not fit {self.slices}")
        chunk = bytearray(bitmap)
        chunk[-1] &= _tail_mask(nbits)
        self.bits[base // 8 : base // 8 + len(chunk)] = chunk

    def count(self) -> int:
        return sum(_POPCOUNT[b] for b in self.bits)


def union(maps: Iterable[MissingMap], slices: int) -> bytes:
    """Slices that at least one of ``maps`` misses: each is repaired once for all of them."""
    nbytes = (slices + 7) // 8
    acc = 0
    for m in maps:
        acc |= int.from_bytes(m.bits, "big")
    return acc.to_bytes(nbytes, "big")
