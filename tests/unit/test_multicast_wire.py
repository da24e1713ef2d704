"""The multicast wire format: every message round-trips, every malformed datagram is named."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netdeploy.multicast import wire
from netdeploy.multicast.policy import frames_on_wire, wire_bytes

SESSION = 0xDEADBEEF


def test_default_slice_fills_eight_fragments_exactly():
    udp_payload = wire.DEFAULT_SLICE_SIZE + wire.DATA_OVERHEAD
    assert (udp_payload + 8) % 1480 == 0
    assert frames_on_wire(udp_payload) == 8
    # 8 Ethernet frames of 1514 bytes for 11816 image bytes: under the 1.03x bar
    assert wire_bytes(udp_payload) == 8 * 1514
    assert 8 * 1514 / wire.DEFAULT_SLICE_SIZE < 1.026


@given(
    index=st.integers(0, 2**32 - 1),
    session=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=3000),
)
def test_data_round_trips(index, session, payload):
    msg = wire.parse(wire.pack_data(session, index, payload))
    assert isinstance(msg, wire.Data)
    assert (msg.session, msg.slice, bytes(msg.payload)) == (session, index, payload)
    assert msg.crc == wire.crc32(payload)


@pytest.mark.parametrize(
    "datagram, expected",
    [
        (
            wire.pack_hello(SESSION, 10**12, 11816, 84632, 3, 4),
            wire.Hello(SESSION, 10**12, 11816, 84632, 3, 4),
        ),
        (wire.pack_end(SESSION, 7, 99), wire.End(SESSION, 7, 99)),
        (wire.pack_finish(SESSION, 1), wire.Finish(SESSION, 1)),
        (wire.pack_drop(SESSION, 5, 2), wire.Drop(SESSION, 5, 2)),
        (wire.pack_ack(SESSION, 5), wire.Ack(SESSION, 5)),
        (wire.pack_status(SESSION, 5, 2, 10, 12, 2, 3), wire.Status(SESSION, 5, 2, 10, 12, 2, 3)),
        (
            wire.pack_nak(SESSION, 5, 2, 16, 12, b"\x80\x10"),
            wire.Nak(SESSION, 5, 2, 16, 12, b"\x80\x10"),
        ),
    ],
)
def test_control_messages_round_trip(datagram, expected):
    assert wire.parse(datagram) == expected


GOOD_STATUS = wire.pack_status(SESSION, 1, 0, 0, 0, 0)


@pytest.mark.parametrize(
    "datagram, reason",
    [
        (b"", "truncated header"),
        (b"ND\x01", "truncated header"),
        (b"XX" + GOOD_STATUS[2:], "bad magic"),
        (GOOD_STATUS[:2] + b"\x09" + GOOD_STATUS[3:], "unsupported version"),
        (GOOD_STATUS[:3] + b"\x63" + GOOD_STATUS[4:], "unknown type"),
        (wire.pack_data(SESSION, 1, b"")[:12], "truncated DATA header"),
        (GOOD_STATUS[:-1], "STATUS must be 32 bytes"),
        (GOOD_STATUS + b"\x00", "STATUS must be 32 bytes"),
        (wire.pack_end(SESSION, 1, 2)[:-2], "END must be"),
        (wire.pack_nak(SESSION, 1, 1, 8, 8, b"\xff")[:20], "truncated NAK"),
        (
            wire.HEADER.pack(wire.MAGIC, 1, wire.Kind.NAK, SESSION)
            + wire.NAK_BODY.pack(1, 1, 3, 8)
            + b"\xff",
            "not a multiple of 8",
        ),
        (
            wire.HEADER.pack(wire.MAGIC, 1, wire.Kind.NAK, SESSION)
            + wire.NAK_BODY.pack(1, 1, 8, 16)
            + b"\xff",
            "16 bits with a 1-byte bitmap",
        ),
        (
            wire.HEADER.pack(wire.MAGIC, 1, wire.Kind.NAK, SESSION)
            + wire.NAK_BODY.pack(1, 1, 0, wire.NAK_WINDOW + 8)
            + bytes(wire.NAK_WINDOW // 8 + 1),
            "NAK window of",
        ),
    ],
)
def test_malformed_datagrams_are_rejected_with_a_reason(datagram, reason):
    with pytest.raises(wire.Malformed, match=reason):
        wire.parse(datagram)


def test_pack_nak_refuses_a_window_the_parser_would_reject():
    with pytest.raises(ValueError):
        wire.pack_nak(SESSION, 1, 1, 4, 8, b"\x00")
    with pytest.raises(ValueError):
        wire.pack_nak(SESSION, 1, 1, 8, 9, b"\x00")


SIZE, SLICE = 10_000, 3000  # slices of 3000, 3000, 3000, 1000


def data(session=SESSION, index=0, payload=None, crc=None):
    payload = bytes(wire.slice_length(index, SIZE, SLICE)) if payload is None else payload
    raw = wire.pack_data(session, index, payload)
    if crc is not None:
        raw = raw[:12] + struct.pack("!I", crc) + raw[16:]
    return wire.parse(raw)


@pytest.mark.parametrize(
    "msg, reason",
    [
        (data(), None),
        (data(index=3), None),
        (data(session=SESSION ^ 1), "session"),  # another session (or a stale one)
        (data(index=4, payload=b"x" * 1000), "range"),  # past the last slice
        (data(index=2**32 - 1, payload=b""), "range"),
        (data(index=3, payload=b"x" * 3000), "length"),  # last slice is 1000 bytes
        (data(index=0, payload=b"x" * 2999), "length"),  # truncated payload
        (data(index=1, crc=12345), "crc"),  # damaged or forged
    ],
)
def test_receiver_checks_every_data_datagram(msg, reason):
    assert wire.check_data(msg, SESSION, SIZE, SLICE, wire.slice_count(SIZE, SLICE)) == reason


def test_slice_arithmetic():
    assert wire.slice_count(SIZE, SLICE) == 4
    assert [wire.slice_length(i, SIZE, SLICE) for i in range(4)] == [3000, 3000, 3000, 1000]
    assert wire.slice_count(9000, 3000) == 3
    assert wire.slice_count(0, 3000) == 0
