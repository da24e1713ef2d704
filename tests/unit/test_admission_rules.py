"""Admission: slots, the line, per-address limits and expiry, with a hand-driven clock."""

from __future__ import annotations

import asyncio

from netdeploy.images.admission import Admission, Slot, ordinal


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_slots_then_a_place_in_line() -> None:
    adm = Admission(2, clock=Clock())
    a, b = adm.try_enter("a", "10.0.0.1"), adm.try_enter("b", "10.0.0.2")
    assert isinstance(a, Slot) and isinstance(b, Slot) and adm.active == 2
    assert adm.try_enter("c", "10.0.0.3") == 1
    assert adm.try_enter("d", "10.0.0.4") == 2
    assert adm.try_enter("c", "10.0.0.3") == 1  # asking again keeps the place
    assert [q["key"] for q in adm.queued()] == ["c", "d"]


def test_a_freed_slot_goes_to_the_first_in_line_not_a_newcomer() -> None:
    adm = Admission(1, clock=Clock())
    slot = adm.try_enter("a", "10.0.0.1")
    assert isinstance(slot, Slot)
    assert adm.try_enter("b", "10.0.0.2") == 1
    adm.release(slot)
    assert adm.try_enter("newcomer", "10.0.0.9") == 2  # b is first
    assert isinstance(adm.try_enter("b", "10.0.0.2"), Slot)
    assert adm.position("b") is None and adm.position("newcomer") == 1


def test_a_place_expires_when_its_holder_stops_asking() -> None:
    clock = Clock()
    adm = Admission(1, hold=30, clock=clock)
    slot = adm.try_enter("a", "10.0.0.1")
    assert isinstance(slot, Slot)
    assert adm.try_enter("gone", "10.0.0.2") == 1
    clock.now += 31
    adm.release(slot)
    assert isinstance(adm.try_enter("c", "10.0.0.3"), Slot)  # nobody waits any more


def test_one_address_holds_at_most_its_share_and_blocks_nobody() -> None:
    adm = Admission(4, per_address=2, clock=Clock())
    assert isinstance(adm.try_enter("h1", "10.0.0.1"), Slot)
    assert isinstance(adm.try_enter("h2", "10.0.0.1"), Slot)
    assert adm.try_enter("h3", "10.0.0.1") == 1  # over its share: waits
    assert isinstance(adm.try_enter("x", "10.0.0.2"), Slot)  # not behind h3
    assert adm.try_enter("h4", "10.0.0.1") == 2
    assert adm.try_enter("h5", "10.0.0.1") == 3  # no more places for that address
    assert adm.position("h5") is None


def test_wait_parks_until_a_slot_frees() -> None:
    async def scenario() -> None:
        adm = Admission(1)
        slot = adm.try_enter("a", "10.0.0.1")
        assert isinstance(slot, Slot)
        waiter = asyncio.ensure_future(adm.wait("b", "10.0.0.2", timeout=3600))
        await asyncio.sleep(0)
        assert not waiter.done() and adm.position("b") == 1
        adm.release(slot)
        assert isinstance(await waiter, Slot)
        assert await adm.wait("c", "10.0.0.3", timeout=0) == 1

    asyncio.run(scenario())


def test_ordinals() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th",
    ]  # fmt: skip
