"""The multicast wire format: every datagram both ends exchange, packed and checked. Pure.

One layout, shared by the Python sender and both receivers (``netdeploy receive`` and the C
receiver in ``bootfiles/agent/ndmc-recv.c``); docs/multicast.md draws it. All integers are
big-endian (network order). Every datagram starts with the same 8-byte header::

    magic u16 = 0x4E44 ("ND") | version u8 = 1 | type u8 | session u32

The image is cut into *slices* of ``slice_size`` bytes (the last one shorter); slice ``k``
holds bytes ``[k*slice_size, k*slice_size + len)``. A DATA datagram carries exactly one
slice with its number and a CRC-32 of its payload, so a receiver can place it without any
other state and reject a damaged, truncated or foreign one. The whole image is verified by
sha256 at the end; the CRC only keeps bad slices out of the bitmap.

Sender to group: DATA, HELLO (waiting to start / alive), END (a pass or repair round is
over: report what you miss), FINISH (the session is over). Sender to one receiver: DROP
(finish by unicast), ACK (your completion report arrived). Receiver to sender (unicast to
the session's feedback port): STATUS (counters; completion) and NAK (a window of the
missing-slice bitmap).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

MAGIC = 0x4E44
VERSION = 1

HEADER = struct.Struct("!HBBI")  # magic, version, type, session
DATA_HEADER = struct.Struct("!HBBIII")  # + slice, crc32
HELLO_BODY = struct.Struct("!QIIHH")  # size, slice_size, slices, joined, expected
END_BODY = struct.Struct("!II")  # round, slices
FINISH_BODY = struct.Struct("!I")  # code
DROP_BODY = struct.Struct("!II")  # receiver, reason
ACK_BODY = struct.Struct("!I")  # receiver
STATUS_BODY = struct.Struct("!IIIIII")  # receiver, round, received, highest, missing, flags
NAK_BODY = struct.Struct("!IIII")  # receiver, round, base, nbits; bitmap follows

DATA_OVERHEAD = DATA_HEADER.size
# Ethernet MTU 1500: each IPv4 fragment carries 1480 bytes of IP payload (RFC 791: fragment
# offsets count 8-byte units). A slice datagram filling 8 fragments exactly costs 8 frames of
# 1514 bytes for 11816 image bytes: 2.5 % overhead on the wire, against 4 % for one slice per
# 1500-byte frame (docs/decisions/0005).
DEFAULT_SLICE_SIZE = 8 * 1480 - 8 - DATA_OVERHEAD  # 11816
MAX_SLICE_SIZE = 65507 - DATA_OVERHEAD  # largest UDP payload over IPv4, minus our header
NAK_WINDOW = 8192  # slices per NAK datagram: a 1 KiB bitmap, well under any MTU


FINISH_DONE = 0  # FINISH codes: the session ended normally
FINISH_ABORTED = 1  # the server is stopping: receivers join again (its restart)


class Kind(IntEnum):
    DATA = 1
    HELLO = 2
    END = 3
    FINISH = 4
    DROP = 5
    ACK = 6
    STATUS = 16
    NAK = 17


class Flag(IntEnum):
    """STATUS flags."""

    COMPLETE = 1  # every slice is in place
    VERIFIED = 2  # ... and the sha256 of the whole image matched
    BAD = 4  # ... and it did not match: the copy is not good


class DropReason(IntEnum):
    LOSSY = 1  # lost more than slow_receiver_loss of the slices
    SLOW = 2  # still incomplete slow_receiver_timeout after the others
    SILENT = 3  # no report for slow_receiver_timeout


class Malformed(ValueError):
    """A datagram that is not ours or is damaged; the reason names which check failed."""


@dataclass(frozen=True)
class Data:
    session: int
    slice: int
    crc: int
    payload: memoryview


@dataclass(frozen=True)
class Hello:
    session: int
    size: int
    slice_size: int
    slices: int
    joined: int
    expected: int


@dataclass(frozen=True)
class End:
    session: int
    round: int
    slices: int


@dataclass(frozen=True)
class Finish:
    session: int
    code: int


@dataclass(frozen=True)
class Drop:
    session: int
    receiver: int
    reason: int


@dataclass(frozen=True)
class Ack:
    session: int
    receiver: int


@dataclass(frozen=True)
class Status:
    session: int
    receiver: int
    round: int
    received: int
    highest: int
    missing: int
    flags: int


@dataclass(frozen=True)
class Nak:
    session: int
    receiver: int
    round: int
    base: int
    nbits: int
    bitmap: bytes


Message = Data | Hello | End | Finish | Drop | Ack | Status | Nak


def slice_count(size: int, slice_size: int) -> int:
    return (size + slice_size - 1) // slice_size


def slice_length(index: int, size: int, slice_size: int) -> int:
    """Bytes in slice ``index``: ``slice_size`` except for the last one."""
    return min(slice_size, size - index * slice_size)


def crc32(payload: bytes | memoryview) -> int:
    return zlib.crc32(payload) & 0xFFFFFFFF


def _header(kind: Kind, session: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, kind, session)


def data_header(session: int, index: int, payload: bytes | memoryview) -> bytes:
    """The 16 bytes that precede a slice's payload (sent with sendmsg, payload not copied)."""
    return DATA_HEADER.pack(MAGIC, VERSION, Kind.DATA, session, index, crc32(payload))


def pack_data(session: int, index: int, payload: bytes | memoryview) -> bytes:
    return data_header(session, index, payload) + bytes(payload)


def pack_hello(
    session: int, size: int, slice_size: int, slices: int, joined: int, expected: int
) -> bytes:
    return _header(Kind.HELLO, session) + HELLO_BODY.pack(
        size, slice_size, slices, min(joined, 0xFFFF), min(expected, 0xFFFF)
    )


def pack_end(session: int, round_: int, slices: int) -> bytes:
    return _header(Kind.END, session) + END_BODY.pack(round_, slices)


def pack_finish(session: int, code: int = 0) -> bytes:
    return _header(Kind.FINISH, session) + FINISH_BODY.pack(code)


def pack_drop(session: int, receiver: int, reason: int) -> bytes:
    return _header(Kind.DROP, session) + DROP_BODY.pack(receiver, reason)


def pack_ack(session: int, receiver: int) -> bytes:
    return _header(Kind.ACK, session) + ACK_BODY.pack(receiver)


def pack_status(
    session: int,
    receiver: int,
    round_: int,
    received: int,
    highest: int,
    missing: int,
    flags: int = 0,
) -> bytes:
    return _header(Kind.STATUS, session) + STATUS_BODY.pack(
        receiver, round_, received, highest, missing, flags
    )


def pack_nak(
    session: int, receiver: int, round_: int, base: int, nbits: int, bitmap: bytes
) -> bytes:
    if base % 8 or len(bitmap) != (nbits + 7) // 8:
        raise ValueError("NAK windows start on a byte boundary and carry ceil(nbits/8) bytes")
    return _header(Kind.NAK, session) + NAK_BODY.pack(receiver, round_, base, nbits) + bitmap


def _fixed(kind: Kind, body: struct.Struct, datagram: memoryview) -> tuple[int, ...]:
    if len(datagram) != HEADER.size + body.size:
        raise Malformed(f"{kind.name} must be {HEADER.size + body.size} bytes, got {len(datagram)}")
    return body.unpack_from(datagram, HEADER.size)


def parse(datagram: bytes | memoryview) -> Message:
    """Decode one datagram, or raise :class:`Malformed` saying which check failed.

    Only the shape is checked here; whether the session, receiver and slice numbers belong
    to a running session is for the caller, who knows the session.
    """
    view = memoryview(datagram)
    if len(view) < HEADER.size:
        raise Malformed(f"truncated header: {len(view)} bytes, need {HEADER.size}")
    magic, version, kind_no, session = HEADER.unpack_from(view)
    if magic != MAGIC:
        raise Malformed(f"bad magic {magic:#06x}")
    if version != VERSION:
        raise Malformed(f"unsupported version {version}")
    try:
        kind = Kind(kind_no)
    except ValueError:
        raise Malformed(f"unknown type {kind_no}") from None
    if kind is Kind.DATA:
        if len(view) < DATA_HEADER.size:
            raise Malformed(f"truncated DATA header: {len(view)} bytes")
        _, _, _, _, index, crc = DATA_HEADER.unpack_from(view)
        return Data(session, index, crc, view[DATA_HEADER.size :])
    if kind is Kind.HELLO:
        return Hello(session, *_fixed(kind, HELLO_BODY, view))
    if kind is Kind.END:
        return End(session, *_fixed(kind, END_BODY, view))
    if kind is Kind.FINISH:
        return Finish(session, *_fixed(kind, FINISH_BODY, view))
    if kind is Kind.DROP:
        return Drop(session, *_fixed(kind, DROP_BODY, view))
    if kind is Kind.ACK:
        return Ack(session, *_fixed(kind, ACK_BODY, view))
    if kind is Kind.STATUS:
        return Status(session, *_fixed(kind, STATUS_BODY, view))
    # NAK
    if len(view) < HEADER.size + NAK_BODY.size:
        raise Malformed(f"truncated NAK: {len(view)} bytes")
    receiver, round_, base, nbits = NAK_BODY.unpack_from(view, HEADER.size)
    bitmap = bytes(view[HEADER.size + NAK_BODY.size :])
    if base % 8:
        raise Malformed(f"NAK window base {base} is not a multiple of 8")
    if nbits == 0 or nbits > NAK_WINDOW or len(bitmap) != (nbits + 7) // 8:
        raise Malformed(f"NAK window of {nbits} bits with a {len(bitmap)}-byte bitmap")
    return Nak(session, receiver, round_, base, nbits, bitmap)


def check_data(msg: Data, session: int, size: int, slice_size: int, slices: int) -> str | None:
    """Why a DATA datagram must be ignored by a receiver of ``session``, or None if it is good."""
    if msg.session != session:
        return "session"
    if msg.slice >= slices:
        return "range"
    if len(msg.payload) != slice_length(msg.slice, size, slice_size):
        return "length"
    if crc32(msg.payload) != msg.crc:
        return "crc"
    return None
