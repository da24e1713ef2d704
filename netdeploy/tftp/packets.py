"""TFTP wire format: parse requests, build DATA/OACK/ERROR packets (RFC 1350, 2347).

Pure functions over bytes, no sockets: the engine and the tests share them, and hostile
input is handled here once. A parse failure raises :class:`BadPacket` carrying the TFTP
error code and a message for the client, so the caller only decides where to send it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum


class Op(IntEnum):
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6  # RFC 2347


class ErrorCode(IntEnum):
    """RFC 1350 §5 error codes, plus 8 from RFC 2347."""

    UNDEFINED = 0
    NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    BAD_OPTIONS = 8  # RFC 2347: option negotiation refused


# RFC 2347 §2: a request with its options "may not exceed 512 octets".
MAX_REQUEST = 512
MODES = ("octet", "netascii")

_HEADER = struct.Struct("!HH")


class BadPacket(Exception):
    """A packet we refuse; ``code`` and ``message`` go back to the sender as an ERROR."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Request:
    """A parsed RRQ or WRQ. Option names are lower-cased; values are the raw strings."""

    op: Op
    filename: str
    mode: str
    options: dict[str, str] = field(default_factory=dict)


def opcode(packet: bytes) -> int | None:
    """The opcode of ``packet``, or None when it is too short to have one."""
    return (packet[0] << 8 | packet[1]) if len(packet) >= 2 else None


def parse_request(packet: bytes) -> Request:
    """Parse an RRQ/WRQ: ``opcode filename NUL mode NUL [option NUL value NUL]...``."""
    if len(packet) > MAX_REQUEST:
        raise BadPacket(
            ErrorCode.ILLEGAL_OPERATION,
            f"request is {len(packet)} bytes; RFC 2347 allows at most {MAX_REQUEST}",
        )
    op = opcode(packet)
    if op not in (Op.RRQ, Op.WRQ):
        raise BadPacket(ErrorCode.ILLEGAL_OPERATION, f"opcode {op} is not a read request")
    body = packet[2:]
    if not body.endswith(b"\0"):
        raise BadPacket(ErrorCode.ILLEGAL_OPERATION, "request is not NUL-terminated")
    fields = body[:-1].split(b"\0")
    if len(fields) < 2:
        raise BadPacket(ErrorCode.ILLEGAL_OPERATION, "request has no transfer mode")
    if len(fields) % 2:
        raise BadPacket(ErrorCode.ILLEGAL_OPERATION, "option without a value")
    try:
        strings = [f.decode("utf-8") for f in fields]
    except UnicodeDecodeError:
        raise BadPacket(ErrorCode.ACCESS_VIOLATION, "file name or option is not UTF-8") from None
    filename, mode = strings[0], strings[1].lower()
    if not filename:
        raise BadPacket(ErrorCode.NOT_FOUND, "empty file name")
    if mode not in MODES:
        raise BadPacket(
            ErrorCode.ILLEGAL_OPERATION, f"transfer mode {strings[1]!r} unsupported; use octet"
        )
    options: dict[str, str] = {}
    for name, value in zip(strings[2::2], strings[3::2], strict=True):
        key = name.lower()
        if key in options:
            raise BadPacket(ErrorCode.BAD_OPTIONS, f"option {key!r} given twice")
        options[key] = value
    return Request(Op(op), filename, mode, options)


def parse_ack(packet: bytes) -> int | None:
    """The block number of an ACK, or None for anything else."""
    if len(packet) < 4 or packet[0] != 0 or packet[1] != Op.ACK:
        return None
    return packet[2] << 8 | packet[3]


def data_header(block: int) -> bytes:
    """DATA header; block numbers roll over from 65535 to 0 like tftp-hpa, curl and iPXE."""
    return _HEADER.pack(Op.DATA, block & 0xFFFF)


def oack(options: dict[str, str]) -> bytes:
    body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in options.items())
    return _HEADER.pack(Op.OACK, 0)[:2] + body


def error(code: ErrorCode | int, message: str) -> bytes:
    text = message.encode("utf-8", "replace")[:400]
    return _HEADER.pack(Op.ERROR, int(code)) + text + b"\0"


def parse_error(packet: bytes) -> tuple[int, str] | None:
    """(code, message) of an ERROR packet, or None for anything else."""
    if len(packet) < 4 or opcode(packet) != Op.ERROR:
        return None
    code = packet[2] << 8 | packet[3]
    return code, packet[4:].split(b"\0", 1)[0].decode("utf-8", "replace")
