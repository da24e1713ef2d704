"""DHCP packet parsing and building (RFC 2131/2132/3396): options, overload, damage."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netdeploy.dhcp import packet as p
from netdeploy.dhcp.packet import DhcpPacket, MalformedPacket

MAC = bytes.fromhex("525400001001")


def raw_request(options: bytes, *, file: bytes = b"", sname: bytes = b"", cookie=p.MAGIC_COOKIE):
    """A BOOTREQUEST built by hand (not by the code under test)."""
    head = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1,
        1,
        6,
        0,
        0xDEADBEEF,
        4,
        0x8000,
        bytes(4),
        bytes(4),
        bytes(4),
        bytes(4),
        MAC,
        sname,
        file,
    )
    return head + cookie + options


def test_parses_a_pxe_discover():
    opts = (
        b"\x35\x01\x01"  # DHCPDISCOVER
        + b"\x3c\x20PXEClient:Arch:00000:UNDI:002001"
        + b"\x5d\x02\x00\x00"
        + b"\x61\x11\x00"
        + bytes(range(16))
        + b"\x00\x00"  # pads
        + b"\xff"
    )
    pkt = p.parse(raw_request(opts))
    assert pkt.op == p.BOOTREQUEST and pkt.xid == 0xDEADBEEF and pkt.flags == 0x8000
    assert pkt.mac == "52:54:00:00:10:01"
    assert pkt.message_type == p.DISCOVER
    assert pkt.option_text(p.OPT_VENDOR_CLASS) == "PXEClient:Arch:00000:UNDI:002001"
    assert pkt.options[p.OPT_CLIENT_ARCH] == b"\x00\x00"
    assert pkt.options[p.OPT_CLIENT_GUID] == b"\x00" + bytes(range(16))


def test_repeated_options_are_concatenated_in_order():  # RFC 3396 §7
    opts = b"\x35\x01\x01\x3c\x04PXEC\x3c\x05lient\xff"
    assert p.parse(raw_request(opts)).option_text(p.OPT_VENDOR_CLASS) == "PXEClient"


@pytest.mark.parametrize(
    ("overload", "expect_file", "expect_sname"),
    [(1, b"", b"srv"), (2, b"f.bin", b""), (3, b"", b"")],
)
def test_overloaded_file_and_sname_carry_options(overload, expect_file, expect_sname):
    """RFC 2132 §9.3: option 52 moves options into 'file' (1), 'sname' (2) or both (3);
    RFC 3396 §5: read in the order options, file, sname."""
    in_file = b"\x3c\x03PXE\xff" if overload & 1 else b"f.bin"
    in_sname = b"\x3c\x06Client\xff" if overload & 2 else b"srv"
    pkt = p.parse(
        raw_request(
            b"\x35\x01\x01\x34\x01" + bytes([overload]) + b"\xff", file=in_file, sname=in_sname
        )
    )
    want = {1: "PXE", 2: "Client", 3: "PXEClient"}[overload]
    assert pkt.option_text(p.OPT_VENDOR_CLASS) == want
    assert pkt.file == expect_file and pkt.sname == expect_sname


def test_options_without_end_are_accepted_when_whole():
    assert p.parse(raw_request(b"\x35\x01\x03")).message_type == p.REQUEST


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (raw_request(b"")[:239], "truncated"),
        (raw_request(b"\x35\x01\x01\xff", cookie=b"\x63\x82\x53\x00"), "bad_cookie"),
        (raw_request(b"\x35\x01\x01\x3c\x09PXE"), "truncated_option"),
        (raw_request(b"\x35\x01\x01\x3c"), "truncated_option"),
        (raw_request(b"\x34\x01\x07\xff"), "bad_overload"),
        (raw_request(b"\x34\x02\x01\x01\xff"), "bad_overload"),
        (raw_request(b"\x34\x01\x01\xff", file=b"\x3c\x7fPXE"), "truncated_option"),
        (b"\x03" + raw_request(b"\xff")[1:], "bad_op"),
        (raw_request(b"\xff")[:2] + b"\x11" + raw_request(b"\xff")[3:], "bad_hlen"),
    ],
)
def test_damage_is_refused_with_a_reason(data, reason):
    with pytest.raises(MalformedPacket) as err:
        p.parse(data)
    assert err.value.reason == reason
    assert str(err.value)


def test_build_then_parse_round_trips_and_pads_to_bootp_minimum():
    long_value = bytes(range(256)) * 2  # 512 bytes: three options on the wire (RFC 3396 §6)
    pkt = DhcpPacket(
        op=p.BOOTREPLY,
        xid=7,
        chaddr=MAC,
        flags=p.BROADCAST_FLAG,
        siaddr="10.89.0.1",
        file=b"media/undionly.kpxe",
        options={p.OPT_MESSAGE_TYPE: b"\x02", 200: long_value, p.OPT_VENDOR_CLASS: b"PXEClient"},
    )
    wire = p.build(pkt)
    assert len(wire) >= p.BOOTP_MIN_REPLY
    assert wire[236:240] == p.MAGIC_COOKIE
    assert wire.count(b"\xc8\xff") == 2 and b"\xc8\x02" in wire  # 255 + 255 + 2
    back = p.parse(wire)
    assert back.options == pkt.options
    assert list(back.options) == list(pkt.options)
    assert (back.siaddr, back.file, back.mac) == (
        "10.89.0.1",
        b"media/undionly.kpxe",
        "52:54:00:00:10:01",
    )


def test_short_replies_are_padded_and_long_names_refused():
    assert len(p.build(DhcpPacket(op=2, xid=1, chaddr=MAC))) == p.BOOTP_MIN_REPLY
    with pytest.raises(ValueError):
        p.build(DhcpPacket(op=2, xid=1, chaddr=MAC, file=b"x" * 128))


def test_non_ethernet_has_no_mac():
    assert DhcpPacket(op=1, xid=1, chaddr=MAC, htype=6).mac is None
    assert DhcpPacket(op=1, xid=1, chaddr=MAC[:4]).mac is None


@given(st.binary(max_size=600))
def test_any_bytes_parse_or_raise_malformed(data):
    try:
        pkt = p.parse(data)
    except MalformedPacket as exc:
        assert exc.reason
    else:
        assert pkt.op in (1, 2)


@given(st.binary(max_size=400))
def test_any_option_bytes_after_a_valid_header(options):
    try:
        pkt = p.parse(raw_request(options))
    except MalformedPacket as exc:
        assert exc.reason in {"truncated_option", "bad_overload"}
    else:
        assert all(0 < code < 255 for code in pkt.options)
