"""Wire format and option negotiation: pure functions, checked exhaustively and generatively."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netdeploy.tftp import packets
from netdeploy.tftp.options import negotiate
from netdeploy.tftp.packets import BadPacket, ErrorCode, Op


def test_parse_rrq_with_options_lowercases_names_and_mode() -> None:
    req = packets.parse_request(b"\0\x01pxelinux.0\0OCTET\0BLKSIZE\x001468\0tsize\x000\0")
    assert (req.op, req.filename, req.mode) == (Op.RRQ, "pxelinux.0", "octet")
    assert req.options == {"blksize": "1468", "tsize": "0"}


@pytest.mark.parametrize(
    ("packet", "code"),
    [
        (b"\0\x01f\0octet", ErrorCode.ILLEGAL_OPERATION),  # no final NUL
        (b"\0\x01f\0", ErrorCode.ILLEGAL_OPERATION),  # no mode
        (b"\0\x01\0octet\0", ErrorCode.NOT_FOUND),  # empty name
        (b"\0\x01f\0octet\0blksize\0", ErrorCode.ILLEGAL_OPERATION),  # option without value
        (b"\0\x01f\0mail\0", ErrorCode.ILLEGAL_OPERATION),
        (b"\0\x01\xff\xfe\0octet\0", ErrorCode.ACCESS_VIOLATION),  # not UTF-8
        (b"\0\x01f\0octet\0tsize\x000\0TSIZE\x000\0", ErrorCode.BAD_OPTIONS),  # duplicate
        (b"\0\x01" + b"f" * 600 + b"\0octet\0", ErrorCode.ILLEGAL_OPERATION),  # > 512 bytes
        (b"\0\x04\0\x01", ErrorCode.ILLEGAL_OPERATION),
    ],
)
def test_malformed_requests_get_precise_errors(packet: bytes, code: ErrorCode) -> None:
    with pytest.raises(BadPacket) as caught:
        packets.parse_request(packet)
    assert caught.value.code == code and caught.value.message


@given(st.binary(max_size=600))
def test_parse_request_only_ever_raises_badpacket(packet: bytes) -> None:
    try:
        req = packets.parse_request(packet)
    except BadPacket as exc:
        assert 0 <= exc.code <= 8
    else:
        assert req.op in (Op.RRQ, Op.WRQ) and req.mode in packets.MODES


def test_acks_errors_and_headers() -> None:
    assert packets.parse_ack(b"\0\x04\xff\xff") == 65535
    assert packets.parse_ack(b"\0\x04\0") is None
    assert packets.parse_ack(b"\0\x03\0\x01") is None
    assert packets.data_header(65536) == b"\0\x03\0\0"  # rollover to 0
    assert packets.data_header(65537) == b"\0\x03\0\x01"
    assert packets.parse_error(packets.error(ErrorCode.UNKNOWN_TID, "who?")) == (5, "who?")
    assert packets.oack({"blksize": "1468"}) == b"\0\x06blksize\x001468\0"


def test_negotiation_follows_the_rfcs() -> None:
    chosen = negotiate({"blksize": "70000", "windowsize": "100", "tsize": "0"}, 1234)
    assert (chosen.blksize, chosen.windowsize) == (65464, 64)  # lowered to our limits
    assert chosen.reply == {"blksize": "65464", "tsize": "1234", "windowsize": "64"}
    assert negotiate({"timeout": "5"}, 0).timeout == 5.0
    assert negotiate({}, 10).reply == {}
    assert negotiate({"color": "red"}, 10).reply == {}  # unknown: ignored (RFC 2347)


@pytest.mark.parametrize(
    "options",
    [
        {"blksize": "0"},
        {"blksize": "7"},
        {"blksize": "x"},
        {"windowsize": "0"},
        {"tsize": "-1"},
        {"tsize": "big"},
        {"timeout": "0"},
        {"timeout": "256"},
        {"blksize": "١٢٣"},
    ],  # Arabic-Indic digits: isdigit() but not ASCII
)
def test_absurd_options_are_refused(options: dict[str, str]) -> None:
    with pytest.raises(BadPacket) as caught:
        negotiate(options, 100)
    assert caught.value.code == ErrorCode.BAD_OPTIONS
    assert next(iter(options)) in caught.value.message
