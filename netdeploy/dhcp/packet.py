"""DHCP/BOOTP packets (RFC 2131, RFC 2132): parse any bytes into a packet or a precise refusal,
and build replies. Pure: no sockets, no clock.

Parsing is total: every input either yields a :class:`DhcpPacket` or raises
:class:`MalformedPacket` with a short ``reason`` (a bounded metrics label) and a message.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

MAGIC_COOKIE = b"\x63\x82\x53\x63"  # RFC 2131 §3: first four octets of the options field
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes, RFC 2131 §2 figure 1
MIN_LENGTH = HEADER.size + len(MAGIC_COOKIE)
BOOTP_MIN_REPLY = 300  # RFC 1542 §2.1: some BOOTP relays and clients drop anything shorter

BOOTREQUEST, BOOTREPLY = 1, 2
BROADCAST_FLAG = 0x8000  # RFC 2131 §2 figure 2

# option codes (RFC 2132 unless noted)
PAD, END = 0, 255
OPT_VENDOR_SPECIFIC = 43
OPT_REQUESTED_IP = 50
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_VENDOR_CLASS = 60
OPT_BOOTFILE = 67
OPT_USER_CLASS = 77  # RFC 3004; iPXE sends the bare string "iPXE"
OPT_CLIENT_ARCH = 93  # RFC 4578 §2.1
OPT_CLIENT_NDI = 94  # RFC 4578 §2.2
OPT_CLIENT_GUID = 97  # RFC 4578 §2.3
OPT_IPXE = 175  # iPXE's encapsulated options: present only when the client is iPXE

# message types, RFC 2132 §9.6
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
MESSAGE_NAMES = {
    DISCOVER: "DHCPDISCOVER",
    OFFER: "DHCPOFFER",
    REQUEST: "DHCPREQUEST",
    DECLINE: "DHCPDECLINE",
    ACK: "DHCPACK",
    NAK: "DHCPNAK",
    RELEASE: "DHCPRELEASE",
    INFORM: "DHCPINFORM",
}


class MalformedPacket(ValueError):
    """Bytes that are not a DHCP packet; ``reason`` is a short label for metrics."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class DhcpPacket:
    op: int
    xid: int
    chaddr: bytes  # the client hardware address, ``hlen`` bytes (no padding)
    htype: int = 1  # Ethernet
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: str = "0.0.0.0"
    yiaddr: str = "0.0.0.0"
    siaddr: str = "0.0.0.0"
    giaddr: str = "0.0.0.0"
    sname: bytes = b""
    file: bytes = b""
    # code -> value; repeated codes are already concatenated (RFC 3396). Insertion order is
    # the order we send them in.
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def mac(self) -> str | None:
        """The Ethernet MAC in canonical form, or None for other hardware types."""
        if self.htype != 1 or len(self.chaddr) != 6:
            return None
        return ":".join(f"{b:02x}" for b in self.chaddr)

    @property
    def message_type(self) -> int | None:
        value = self.options.get(OPT_MESSAGE_TYPE)
        return value[0] if value and len(value) == 1 else None

    def option_text(self, code: int) -> str:
        """An option as text (vendor class, user class): printable ASCII, trailing NULs cut."""
        value = self.options.get(code, b"").rstrip(b"\0")
        return "".join(chr(b) if 32 <= b < 127 else "?" for b in value)


def _ip(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


def _cstring(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def parse_options(buf: bytes, where: str) -> list[tuple[int, bytes]]:
    """Options as (code, value) in wire order; stops at END. RFC 2132 §2: PAD and END have no
    length octet, every other option has one."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(buf):
        code = buf[i]
        if code == END:
            break
        if code == PAD:
            i += 1
            continue
        if i + 1 >= len(buf):
            raise MalformedPacket("truncated_option", f"option {code} in {where} has no length")
        length = buf[i + 1]
        if i + 2 + length > len(buf):
            raise MalformedPacket(
                "truncated_option",
                f"option {code} in {where} says {length} bytes, {len(buf) - i - 2} left",
            )
        out.append((code, buf[i + 2 : i + 2 + length]))
        i += 2 + length
    return out


def parse(data: bytes) -> DhcpPacket:
    """One UDP payload as a DHCP packet, or :class:`MalformedPacket`."""
    if len(data) < MIN_LENGTH:
        raise MalformedPacket(
            "truncated", f"{len(data)} bytes; a DHCP packet has at least {MIN_LENGTH}"
        )
    (
        op,
        htype,
        hlen,
        hops,
        xid,
        secs,
        flags,
        ciaddr,
        yiaddr,
        siaddr,
        giaddr,
        chaddr,
        sname,
        file,
    ) = HEADER.unpack_from(data)
    if data[HEADER.size : MIN_LENGTH] != MAGIC_COOKIE:
        raise MalformedPacket(
            "bad_cookie", "no DHCP magic cookie 99.130.83.99 (RFC 2131 §3); plain BOOTP?"
        )
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise MalformedPacket("bad_op", f"op {op} is neither BOOTREQUEST nor BOOTREPLY")
    if hlen > 16:
        raise MalformedPacket("bad_hlen", f"hardware address length {hlen} > 16")
    wire = parse_options(data[MIN_LENGTH:], "options")
    overload = 0
    for code, value in wire:
        if code == OPT_OVERLOAD:  # RFC 2132 §9.3: 1 file, 2 sname, 3 both
            if len(value) != 1 or value[0] not in (1, 2, 3):
                raise MalformedPacket("bad_overload", f"option 52 value {value.hex()} not 1, 2, 3")
            overload = value[0]
    # RFC 3396 §5: the options field first, then 'file', then 'sname'
    if overload & 1:
        wire += [(c, v) for c, v in parse_options(file, "file") if c != OPT_OVERLOAD]
    if overload & 2:
        wire += [(c, v) for c, v in parse_options(sname, "sname") if c != OPT_OVERLOAD]
    options: dict[int, bytes] = {}
    for code, value in wire:  # RFC 3396 §7: repeated options are concatenated in order
        options[code] = options.get(code, b"") + value
    return DhcpPacket(
        op=op,
        xid=xid,
        chaddr=chaddr[:hlen],
        htype=htype,
        hops=hops,
        secs=secs,
        flags=flags,
        ciaddr=_ip(ciaddr),
        yiaddr=_ip(yiaddr),
        siaddr=_ip(siaddr),
        giaddr=_ip(giaddr),
        sname=b"" if overload & 2 else _cstring(sname),
        file=b"" if overload & 1 else _cstring(file),
        options=options,
    )


def encode_options(options: dict[int, bytes]) -> bytes:
    """Options in order, each longer than 255 bytes split into several (RFC 3396 §6), then END."""
    out = bytearray()
    for code, value in options.items():
        if code in (PAD, END):
            raise ValueError(f"option {code} carries no value")
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [b""]
        for chunk in chunks:
            out += bytes((code, len(chunk))) + chunk
    out.append(END)
    return bytes(out)


def build(packet: DhcpPacket) -> bytes:
    """The wire form of ``packet`` (no overload: everything fits our replies)."""
    if len(packet.sname) > 63 or len(packet.file) > 127:
        raise ValueError("sname holds 63 bytes and file 127, plus their NUL")
    head = HEADER.pack(
        packet.op,
        packet.htype,
        len(packet.chaddr),
        packet.hops,
        packet.xid,
        packet.secs,
        packet.flags,
        ipaddress.IPv4Address(packet.ciaddr).packed,
        ipaddress.IPv4Address(packet.yiaddr).packed,
        ipaddress.IPv4Address(packet.siaddr).packed,
        ipaddress.IPv4Address(packet.giaddr).packed,
        packet.chaddr,
        packet.sname,
        packet.file,
    )
    data = head + MAGIC_COOKIE + encode_options(packet.options)
    return data.ljust(BOOTP_MIN_REPLY, b"\0")
