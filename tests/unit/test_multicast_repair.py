"""Repair and session rules, without sockets: bitmaps, NAK windows, start/drop/rate rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netdeploy.multicast import policy, wire
from netdeploy.multicast.slicemap import MissingMap, SliceMap, set_bits, union
from netdeploy.multicast.unicast import byte_ranges


def received(slices: int, have: set[int]) -> SliceMap:
    m = SliceMap(slices)
    for i in have:
        m.add(i)
    return m


def nak_missing(m: SliceMap, window: int = wire.NAK_WINDOW) -> set[int]:
    """What a sender learns from the NAKs this receiver would send."""
    got: set[int] = set()
    for base, nbits, bitmap in m.nak_windows(window):
        assert base % 8 == 0 and nbits <= window
        wire.parse(wire.pack_nak(1, 1, 1, base, nbits, bitmap))  # fits the wire format
        got.update(set_bits(bitmap, base))
    return got


@given(slices=st.integers(1, 3000), data=st.data())
def test_naks_name_exactly_the_missing_slices(slices, data):
    have = data.draw(st.sets(st.integers(0, slices - 1)))
    m = received(slices, have)
    assert nak_missing(m, window=64) == set(range(slices)) - have
    assert m.missing == slices - len(have)
    runs = m.missing_ranges()
    assert {i for a, b in runs for i in range(a, b)} == set(range(slices)) - have
    assert all(a < b for a, b in runs)


def test_complete_receiver_sends_no_nak():
    m = received(20, set(range(20)))
    assert m.complete and list(m.nak_windows()) == []


def test_adding_twice_counts_once():
    m = SliceMap(10)
    assert m.add(3) and not m.add(3)
    assert m.received == 1


def test_union_repairs_each_slice_once_for_all_receivers():
    slices = 100
    a, b, c = MissingMap(slices), MissingMap(slices), MissingMap(slices)
    for mm, missing in ((a, {1, 5, 50}), (b, {5, 50, 99}), (c, set())):
        rm = received(slices, set(range(slices)) - missing)
        for base, nbits, bitmap in rm.nak_windows():
            mm.apply(base, nbits, bitmap)
    wanted = list(set_bits(union([a, b, c], slices)))
    assert wanted == [1, 5, 50, 99]  # 5 and 50 asked twice, sent once


def test_missing_map_window_is_replaced_not_accumulated():
    mm = MissingMap(16)
    mm.apply(0, 16, b"\xff\xff")
    mm.apply(8, 8, b"\x01")  # a later report: only slice 15 still missing in [8, 16)
    assert list(set_bits(mm.bits)) == [0, 1, 2, 3, 4, 5, 6, 7, 15]
    assert mm.count() == 9


@pytest.mark.parametrize(
    "base, nbits, bitmap", [(3, 8, b"\x00"), (8, 16, b"\xff\xff"), (0, 8, b"")]
)
def test_missing_map_refuses_windows_outside_the_image(base, nbits, bitmap):
    with pytest.raises(ValueError):
        MissingMap(16).apply(base, nbits, bitmap)


def test_missing_map_ignores_bits_past_the_window():
    mm = MissingMap(10)
    mm.apply(8, 2, b"\xff")  # only bits for slices 8 and 9 count
    assert list(set_bits(mm.bits)) == [8, 9]


def test_byte_ranges_merge_close_gaps_and_stop_at_the_image_end():
    m = received(10, {2, 3, 5, 6, 7, 8})  # missing 0, 1, 4, 9
    assert byte_ranges(m, 100, 950, merge_gap=0) == [(0, 200), (400, 500), (900, 950)]
    assert byte_ranges(m, 100, 950, merge_gap=300) == [(0, 500), (900, 950)]
    assert byte_ranges(m, 100, 950, merge_gap=10_000) == [(0, 950)]


@pytest.mark.parametrize(
    "joined, expected, min_receivers, waited, max_wait, starts",
    [
        (3, 3, 1, 0.0, 60, True),  # everyone expected is here: go at once
        (2, 3, 1, 10.0, 60, False),  # one missing and time is left: wait
        (2, 3, 2, 60.0, 60, True),  # enough joined and max_wait passed
        (1, 3, 2, 120.0, 60, False),  # max_wait passed but too few
        (0, None, 1, 999.0, 60, False),  # nobody: never start
        (1, None, 1, 59.9, 60, False),
        (1, None, 1, 60.0, 60, True),
        (4, 3, 5, 0.0, 60, True),  # more than expected (a spare machine joined)
    ],
)
def test_start_rule(joined, expected, min_receivers, waited, max_wait, starts):
    reason = policy.start_reason(joined, expected, min_receivers, waited, max_wait)
    assert (reason is not None) == starts


def test_lossy_receiver_is_judged_only_after_enough_slices():
    assert not policy.too_lossy(received=10, highest=100, bound=0.05, slices=10_000)
    assert policy.too_lossy(received=230, highest=256, bound=0.05, slices=10_000)
    assert not policy.too_lossy(received=250, highest=256, bound=0.05, slices=10_000)
    # a small image: judged after half of it
    assert policy.too_lossy(received=30, highest=50, bound=0.05, slices=100)


def test_rate_backs_off_on_loss_at_most_receivers_and_recovers():
    rc = policy.RateControl(max_rate=100.0)
    assert rc.on_interval([0.0, 0.0, 0.5]) == 100.0  # one bad receiver: no back-off
    assert rc.on_interval([0.1, 0.1, 0.0]) == pytest.approx(70.0)  # most lose: back off
    assert rc.on_interval([0.1, 0.1, 0.1]) == pytest.approx(49.0)
    for _ in range(20):
        rc.on_interval([0.0, 0.0])
    assert rc.rate == 100.0  # climbs back, never past the configured maximum
    for _ in range(100):
        rc.on_interval([1.0])
    assert rc.rate == pytest.approx(2.0)  # the floor: never stalls completely


def test_pacer_spaces_sends_at_the_rate():
    p = policy.Pacer(rate=1000.0, burst=100.0)
    assert p.delay(100, now=0.0) == 0
    p.spend(100)
    assert p.delay(100, now=0.0) == pytest.approx(0.1)
    assert p.delay(100, now=0.1) == 0
    p.spend(100)
    assert p.delay(50, now=0.12) == pytest.approx(0.03)
