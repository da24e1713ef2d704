"""Repair and session rules, without sockets: bitmaps, NAK windows, start/drop/rate rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netdeploy.multicast import policy, wire
from netdeploy.multicast.members import SessionParams
from netdeploy.multicast.session import SenderSession
from netdeploy.multicast.slicemap import MissingMap, RepairQueue, SliceMap, set_bits, union
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


# ---------------------------------------------------------------- repairs during the pass


@given(slices=st.integers(1, 2000), data=st.data())
def test_ranged_naks_name_exactly_the_missing_slices_of_the_range(slices, data):
    have = data.draw(st.sets(st.integers(0, slices - 1)))
    first = data.draw(st.integers(0, slices))
    end = data.draw(st.integers(first, slices))
    got: set[int] = set()
    for base, nbits, bitmap in received(slices, have).nak_windows(64, first, end):
        assert base % 8 == 0 and nbits <= 64 and base + nbits <= end
        wire.parse(wire.pack_nak(1, 1, 0, base, nbits, bitmap))
        got.update(set_bits(bitmap, base))
    assert got == set(range(first, end)) - have


@given(slices=st.integers(1, 500), data=st.data())
def test_first_missing_is_the_lowest_hole_from_a_position(slices, data):
    have = data.draw(st.sets(st.integers(0, slices - 1)))
    start = data.draw(st.integers(0, slices))
    holes = [i for i in range(start, slices) if i not in have]
    assert received(slices, have).first_missing(start) == (holes[0] if holes else slices)


def naks_of(slices: int, missing: set[int], window: int = 64) -> list[tuple[int, int, bytes]]:
    return list(received(slices, set(range(slices)) - missing).nak_windows(window))


def test_merge_accumulates_the_pass_requests_and_counts_new_ones_below_the_limit():
    m = MissingMap(100)
    [(base, nbits, bitmap)] = naks_of(100, {3, 40}, window=128)
    assert m.merge(base, nbits, bitmap) == 2
    [(base, nbits, bitmap)] = naks_of(100, {3, 41, 90}, window=128)
    assert m.merge(base, nbits, bitmap, limit=50) == 1  # 3 known, 90 not sent yet
    assert set(set_bits(m.bits)) == {3, 40, 41}
    assert m.merge(64, 36, b"\xff" * 5, limit=50) == 0


def test_repair_queue_sends_each_requested_slice_once_lowest_first():
    q = RepairQueue(200, holdoff=0.5)
    # two receivers lost 7 and 70; one of them also 150, which was not sent yet
    for missing in ({7, 70}, {7, 70, 150}):
        for base, nbits, bitmap in naks_of(200, missing):
            q.request(base, nbits, bitmap, limit=100, now=0.0)
    assert q.count == 2
    assert q.take(1, now=0.01) == [7]
    assert q.take(10, now=0.01) == [70]
    assert q.take(10, now=0.01) == [] and q.count == 0


def test_repair_queue_holds_off_a_slice_it_just_repaired():
    q = RepairQueue(64, holdoff=0.5)
    [(base, nbits, bitmap)] = naks_of(64, {5})
    assert q.request(base, nbits, bitmap, limit=64, now=0.0) == 1
    assert q.take(4, now=0.0) == [5]
    # a second receiver's NAK for the same hole, sent before the repair reached it
    assert q.request(base, nbits, bitmap, limit=64, now=0.2) == 0
    # the repair was lost: asked again after the hold-off, it is sent again
    assert q.request(base, nbits, bitmap, limit=64, now=1.2) == 1
    assert q.take(4, now=1.2) == [5]


@given(slices=st.integers(1, 600), data=st.data())
def test_repair_queue_takes_exactly_what_was_asked_in_order(slices, data):
    q = RepairQueue(slices, holdoff=10.0)
    asked: set[int] = set()
    for _ in range(data.draw(st.integers(1, 4))):
        missing = data.draw(st.sets(st.integers(0, slices - 1), max_size=50))
        asked |= missing
        for base, nbits, bitmap in naks_of(slices, missing):
            q.request(base, nbits, bitmap, limit=slices, now=0.0)
    taken: list[int] = []
    while q.count:
        batch = q.take(data.draw(st.integers(1, 9)), now=0.0)
        assert batch
        taken += batch
    assert taken == sorted(asked)


def test_repair_queue_refuses_windows_outside_the_image():
    with pytest.raises(ValueError):
        RepairQueue(10).request(8, 8, b"\xff", limit=10, now=0.0)


def test_rate_control_records_its_backoffs_and_lowest_rate():
    rc = policy.RateControl(100.0)
    rc.on_interval([0.5, 0.5, 0.0])
    rc.on_interval([0.5, 0.5])
    rc.on_interval([0.0, 0.0])
    assert rc.backoffs == 2
    assert rc.lowest == pytest.approx(49.0)
    assert rc.rate > rc.lowest


async def test_sender_queues_pass_naks_and_drops_a_receiver_that_asks_for_too_much():
    params = SessionParams(group="239.255.78.1", data_port=1, feedback_port=2)
    s = SenderSession("img", None, "/nonexistent", 3000 * params.slice_size, "0" * 64, params)
    honest = s.join("a", None, "10.0.0.1")
    liar = s.join("b", None, "10.0.0.2")
    s.state, s.sent_slices = "running", 2000
    m = received(3000, set(range(3000)) - {10, 11, 1500})
    for base, nbits, bitmap in m.nak_windows():
        s._on_feedback(
            wire.parse(wire.pack_nak(s.id, honest.id, 0, base, nbits, bitmap)), ("10.0.0.1", 9)
        )
    assert s._repairs.count == 3 and honest.state == "joined"
    # everything from 0, and far past what was sent: only what was sent counts against it
    everything = received(3000, set())
    for base, nbits, bitmap in everything.nak_windows():
        s._on_feedback(
            wire.parse(wire.pack_nak(s.id, liar.id, 0, base, nbits, bitmap)), ("10.0.0.2", 9)
        )
    assert liar.state == "dropped" and "asked for 100%" in liar.reason
    assert liar.asked_count == 2000
    # after the pass, a round-0 NAK is late: the END rounds ask instead
    s.state = "repairing"
    before = s._repairs.count
    for base, nbits, bitmap in m.nak_windows():
        s._on_feedback(
            wire.parse(wire.pack_nak(s.id, honest.id, 0, base, nbits, bitmap)), ("10.0.0.1", 9)
        )
    assert s._repairs.count == before


def test_a_receiver_is_repaired_during_the_pass_only_within_its_allowance():
    assert policy.within_repair_allowance(12, 10, 0.05)  # 5 % of at least 256 slices
    assert not policy.within_repair_allowance(13, 10, 0.05)
    assert policy.within_repair_allowance(50, 1000, 0.05)
    assert not policy.within_repair_allowance(51, 1000, 0.05)


async def test_a_lossy_receiver_costs_the_others_at_most_its_allowance_before_it_is_judged():
    params = SessionParams(group="239.255.78.1", data_port=1, feedback_port=2)
    s = SenderSession("img", None, "/nonexistent", 3000 * params.slice_size, "0" * 64, params)
    lossy = s.join("a", None, "10.0.0.1")
    s.state = "running"
    lost: set[int] = set()
    for sent in range(8, 200, 8):  # it loses a third, and says so at every status
        s.sent_slices = sent
        lost |= {i for i in range(sent - 8, sent) if i % 3 == 0}
        m = received(3000, set(range(sent)) - lost)
        for base, nbits, bitmap in m.nak_windows(first=0, end=sent):
            s._on_feedback(
                wire.parse(wire.pack_nak(s.id, lossy.id, 0, base, nbits, bitmap)),
                ("10.0.0.1", 9),
            )
    assert lossy.state == "joined"  # too few slices to judge it yet
    assert s._repairs.count <= 12
    s.sent_slices = 300
    m = received(3000, set(range(300)) - {i for i in range(300) if i % 3 == 0})
    for base, nbits, bitmap in m.nak_windows(first=0, end=300):
        s._on_feedback(
            wire.parse(wire.pack_nak(s.id, lossy.id, 0, base, nbits, bitmap)), ("10.0.0.1", 9)
        )
    assert lossy.state == "dropped"
    assert s._repairs.count <= 12
