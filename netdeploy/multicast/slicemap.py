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
_NOT_FULL = re.compile(rb"[^\xff]")
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

    def nak_windows(
        self, window: int = NAK_WINDOW, first: int = 0, end: int | None = None
    ) -> Iterator[tuple[int, int, bytes]]:
        """``(base, nbits, missing-bitmap)`` for each window that misses at least one slice
        of ``[first, end)`` (default: all); bits outside that range are left clear."""
        assert window % 8 == 0
        end = self.slices if end is None else min(end, self.slices)
        for base in range(first - first % 8, end, window):
            nbits = min(window, end - base)
            chunk = bytearray(self.bits[base // 8 : (base + nbits + 7) // 8].translate(_INVERT))
            chunk[-1] &= _tail_mask(nbits)
            if base < first:  # the first byte may start below ``first``
                chunk[0] &= 0xFF >> (first - base)
            if any(chunk):
                yield base, nbits, bytes(chunk)

    def first_missing(self, start: int = 0) -> int:
        """The lowest missing slice at or after ``start`` (``slices`` when none is)."""
        pos = start
        while pos < self.slices:
            if pos % 8 == 0:  # skip whole bytes of received slices at C speed
                match = _NOT_FULL.search(self.bits, pos // 8)
                if match is None:
                    return self.slices
                pos = match.start() * 8
            if not self.has(pos):
                return pos
            pos += 1
        return self.slices

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

    def merge(self, base: int, nbits: int, bitmap: bytes, limit: int | None = None) -> int:
        """Add a NAK's bits below ``limit`` to the window (the pass's requests accumulate);
        returns how many of them were new."""
        start, end = self._window(base, nbits, bitmap)
        if limit is not None:
            if base >= limit:
                return 0
            nbits = min(nbits, limit - base)
            end = start + (nbits + 7) // 8
            bitmap = bitmap[: end - start]
        old = int.from_bytes(self.bits[start:end], "big")
        new = int.from_bytes(bitmap, "big") & _mask_bits(nbits)
        self.bits[start:end] = (old | new).to_bytes(end - start, "big")
        return (new & ~old).bit_count()

    def _window(self, base: int, nbits: int, bitmap: bytes) -> tuple[int, int]:
        if base % 8 or base + nbits > self.slices or len(bitmap) != (nbits + 7) // 8:
            raise ValueError(f"NAK window [{base}, {base + nbits}) does not fit {self.slices}")
        return base // 8, base // 8 + len(bitmap)

    def count(self) -> int:
        return sum(_POPCOUNT[b] for b in self.bits)


def _mask_bits(nbits: int) -> int:
    """An int whose ``nbits`` leading bits (of a ``ceil(nbits/8)``-byte bitmap) are set."""
    nbytes = (nbits + 7) // 8
    return ((1 << nbits) - 1) << (nbytes * 8 - nbits)


class RepairQueue:
    """Slices the receivers asked for while the first pass runs: each sent once for all.

    A receiver NAKs a hole soon after it (docs/multicast.md), so the sender repairs it while
    the receiver's in-order hash is still near that point, instead of after the pass when
    the receiver would have to read back and hash everything behind the hole at once. A
    slice repaired less than ``holdoff`` seconds ago is not queued again: the receivers that
    asked for it together get that one copy (suppression, as NORM and uftp do). Pure: the
    caller passes ``now``.
    """

    def __init__(self, slices: int, holdoff: float = 0.5):
        self.slices, self.holdoff = slices, holdoff
        nbytes = (slices + 7) // 8
        self.pending = bytearray(nbytes)
        self.count = 0  # slices queued
        self._recent, self._older = bytearray(nbytes), bytearray(nbytes)
        self._rotated: float | None = None
        self._low = slices  # no queued slice is below this

    def _rotate(self, now: float) -> None:
        if self._rotated is None:
            self._rotated = now
        elif now - self._rotated >= 2 * self.holdoff:  # both generations are old
            self._recent[:] = bytes(len(self._recent))
            self._older[:] = bytes(len(self._older))
            self._rotated = now
        elif now - self._rotated >= self.holdoff:
            self._older, self._recent = self._recent, self._older
            self._recent[:] = bytes(len(self._recent))
            self._rotated = now

    def request(self, base: int, nbits: int, bitmap: bytes, limit: int, now: float) -> int:
        """Queue the window's bits below ``limit`` (slices sent so far); returns how many
        were queued now (not already queued nor repaired within the hold-off)."""
        self._rotate(now)
        if base % 8 or base + nbits > self.slices or len(bitmap) != (nbits + 7) // 8:
            raise ValueError(f"NAK window [{base}, {base + nbits}) does not fit {self.slices}")
        if base >= limit:
            return 0
        nbits = min(nbits, limit - base)
        start, end = base // 8, base // 8 + (nbits + 7) // 8
        asked = int.from_bytes(bitmap[: end - start], "big") & _mask_bits(nbits)
        busy = (
            int.from_bytes(self.pending[start:end], "big")
            | int.from_bytes(self._recent[start:end], "big")
            | int.from_bytes(self._older[start:end], "big")
        )
        new = asked & ~busy
        if not new:
            return 0
        queued = int.from_bytes(self.pending[start:end], "big") | new
        self.pending[start:end] = queued.to_bytes(end - start, "big")
        first = start * 8 + (end - start) * 8 - new.bit_length()
        self._low = min(self._low, first)
        added = new.bit_count()
        self.count += added
        return added

    def take(self, n: int, now: float) -> list[int]:
        """Up to ``n`` queued slices, lowest first; they count as repaired at ``now``."""
        self._rotate(now)
        out: list[int] = []
        pos = self._low // 8
        while len(out) < n and len(out) < self.count:
            match = _NONZERO.search(self.pending, pos)
            if match is None:  # pragma: no cover - the count and the bits disagree
                break
            pos = match.start()
            byte = self.pending[pos]
            for bit in range(8):
                mask = 0x80 >> bit
                if byte & mask and len(out) < n:
                    byte &= ~mask
                    out.append(pos * 8 + bit)
                    self._recent[pos] |= mask
            self.pending[pos] = byte
            if byte:  # n reached inside this byte: the rest of it stays queued
                break
            pos += 1
        self.count = self.count - len(out) if len(out) < self.count else 0
        self._low = pos * 8 if self.count else self.slices
        return out


def union(maps: Iterable[MissingMap], slices: int) -> bytes:
    """Slices that at least one of ``maps`` misses: each is repaired once for all of them."""
    nbytes = (slices + 7) // 8
    acc = 0
    for m in maps:
        acc |= int.from_bytes(m.bits, "big")
    return acc.to_bytes(nbytes, "big")
