"""Per-MAC coalescing of ProxyDHCP events: a boot storm is a few rows, and no request is lost."""

from __future__ import annotations

from netdeploy.dhcp.record import Coalescer


def detail(n: int) -> dict[str, object]:
    return {"message": f"DHCPDISCOVER #{n}", "request": "DHCPDISCOVER"}


def test_first_at_once_repeats_folded_then_summarised_when_the_window_closes():
    c = Coalescer(interval=10)
    assert c.add("m1", "k", detail(1), now=0) == [("m1", detail(1))]
    for n in range(2, 6):
        assert c.add("m1", "k", detail(n), now=n) == []
    assert c.due(now=9.9) == []
    ((mac, summary),) = c.due(now=10)
    assert mac == "m1" and summary["repeats"] == 4
    assert summary["message"].startswith("4 more identical DHCPDISCOVERs within 10 s")
    assert c.due(now=100) == []  # closed once


def test_a_different_question_or_mac_is_recorded_at_once():
    c = Coalescer(interval=10)
    c.add("m1", "k", detail(1), now=0)
    assert c.add("m1", "other", detail(2), now=1) == [("m1", detail(2))]
    assert c.add("m2", "k", detail(3), now=1) == [("m2", detail(3))]


def test_a_repeat_after_the_window_closes_it_and_starts_anew():
    c = Coalescer(interval=10)
    c.add("m1", "k", detail(1), now=0)
    c.add("m1", "k", detail(2), now=5)
    out = c.add("m1", "k", detail(3), now=12)
    assert [d.get("repeats") for _, d in out] == [1, None]


def test_open_windows_are_bounded_and_drained_on_shutdown():
    c = Coalescer(interval=10, max_windows=3)
    for i in range(3):
        c.add(f"m{i}", "k", detail(i), now=0)
        c.add(f"m{i}", "k", detail(i), now=1)
    out = c.add("m9", "k", detail(9), now=2)  # the oldest window closes early
    assert [(m, d.get("repeats")) for m, d in out] == [("m0", 1), ("m9", None)]
    assert sorted(m for m, _ in c.drain()) == ["m1", "m2"]  # m9 had no repeats
