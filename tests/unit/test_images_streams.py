"""Stream limit and per-node byte accounting, with a hand-driven clock."""

from __future__ import annotations

from netdeploy.images.streams import TransferLog

MAC = "52:54:00:aa:00:02"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def begin(log: TransferLog, mac: str | None = MAC, offset: int = 0, length: int = 1000, **kw):  # type: ignore[no-untyped-def]
    args = dict(mac=mac, hostname="n2" if mac else None, peer="10.0.0.9", image="base",
                image_size=1000, offset=offset, length=length)  # fmt: skip
    args.update(kw)
    return log.begin(**args)


def test_position_rate_and_completion_across_a_resume() -> None:
    clock = Clock()
    log = TransferLog(clock=clock, wallclock=clock)
    first = begin(log)
    first.sent(300)
    clock.now += 2
    [entry] = log.snapshot()
    assert (entry["position"], entry["percent"], entry["rate_bps"]) == (300, 30.0, 150)
    facts = first.end()
    assert facts["complete"] is False and facts["sent"] == 300 and facts["seconds"] == 2
    second = begin(log, offset=300, length=700)  # resumed with Range: bytes=300-
    second.sent(700)
    assert second.end()["complete"]
    [entry] = log.snapshot()
    assert entry["bytes_sent"] == 1000 and entry["streams"] == 2 and entry["active"] == 0
    assert entry["complete"] and entry["position"] == 1000 and entry["rate_bps"] == 0


def test_a_complete_range_short_of_the_end_is_not_a_complete_image() -> None:
    log = TransferLog()
    probe = begin(log, length=512)
    probe.sent(512)
    assert probe.end()["complete"]
    assert log.snapshot()[0]["complete"] is False


def test_anonymous_clients_are_kept_apart_by_address() -> None:
    log = TransferLog()
    for mac, peer, n in ((None, "10.0.0.1", 10), (None, "10.0.0.2", 20), (MAC, "10.0.0.9", 30)):
        stream = begin(log, mac=mac, peer=peer)
        stream.sent(n)
        stream.end()
    rows = {(r["mac"], r["peer"]): r for r in log.snapshot()}
    assert rows[(None, "10.0.0.1")]["anonymous"] and rows[(None, "10.0.0.1")]["bytes_sent"] == 10
    assert rows[(None, "10.0.0.2")]["bytes_sent"] == 20
    assert rows[(MAC, "10.0.0.9")]["hostname"] == "n2"


def test_a_new_image_restarts_the_position() -> None:
    log = TransferLog()
    s = begin(log)
    s.sent(1000)
    s.end()
    begin(log, image="other", image_size=5000, length=5000).end()
    [row] = log.snapshot()
    assert (row["image"], row["position"], row["complete"], row["percent"]) == (
        "other",
        0,
        False,
        0.0,
    )


def test_idle_entries_are_evicted_first(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import netdeploy.images.streams as streams

    monkeypatch.setattr(streams, "MAX_ENTRIES", 2)
    log = TransferLog()
    busy = begin(log, mac=None, peer="a")  # stays active
    begin(log, mac=None, peer="b").end()
    last = begin(log, mac=None, peer="c")
    assert sorted(r["peer"] for r in log.snapshot()) == ["a", "c"]
    busy.end()
    last.end()
