"""The pure parts of cross-server events: NOTIFY payloads, the bus's once-per-id window and
the SSE resume cursor."""

from __future__ import annotations

import pytest

from netdeploy.events import EventBus, RecentIds
from netdeploy.http.event_cursor import MAX_HOLES, WINDOW, BadCursor, Cursor
from netdeploy.store.models import Event
from netdeploy.store.notify import IDS_MAX_CHARS, BadNotice, Notice, decode, encode, new_origin


def test_payload_round_trip_with_ids() -> None:
    payload = encode("netdeploy-0a1b2c3d", [21, 17, 18])
    assert payload == "17,18,21 netdeploy-0a1b2c3d"
    assert decode(payload) == Notice("netdeploy-0a1b2c3d", ids=(17, 18, 21))
    assert decode(payload).highest == 21


def test_a_long_id_list_becomes_a_range_within_notifys_limit() -> None:
    ids = list(range(1_000_000, 1_002_000))  # 2,000 ids of 7 digits: far over 7,000 chars
    payload = encode("netdeploy-0a1b2c3d", ids)
    assert payload == "1000000-1001999 netdeploy-0a1b2c3d"
    notice = decode(payload)
    assert notice.span == (1_000_000, 1_001_999) and notice.ids == ()
    assert notice.highest == 1_001_999
    just_fits = list(range(1000, 1000 + IDS_MAX_CHARS // 5))  # "1000," is five characters
    assert "-" not in encode("x", just_fits)
    assert len(encode("x" * 63, ids)) < 8000  # NOTIFY refuses payloads of 8,000 bytes


def test_an_origin_may_hold_spaces() -> None:
    """application_name comes from any client (psql, pgAdmin 4 - DB:netdeploy, ...)."""
    assert decode("5 pgAdmin 4 - DB:netdeploy").origin == "pgAdmin 4 - DB:netdeploy"


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "17",  # no origin
        " netdeploy-1",  # no ids
        "17,,18 netdeploy-1",
        "17;DROP netdeploy-1",
        "-5 netdeploy-1",
        "9-3 netdeploy-1",  # a backwards range
        "1-999999999 netdeploy-1",  # wider than anybody inserts at once
        "1e3 netdeploy-1",
        "\uff11\uff12 netdeploy-1",  # fullwidth digits: int() would take them
        "\u00b2 netdeploy-1",  # superscript two: isdigit() says yes, int() says no
        "9" * 40 + " netdeploy-1",
    ],
)
def test_payloads_netdeploy_never_sends_are_refused(payload: str) -> None:
    with pytest.raises(BadNotice):
        decode(payload)


def test_origins_are_unique_and_fit_application_name() -> None:
    names = {new_origin() for _ in range(100)}
    assert len(names) == 100
    assert all(len(f"{n}-listen") <= 63 for n in names)  # NAMEDATALEN - 1


def test_recent_ids_say_each_id_once_even_out_of_order() -> None:
    recent = RecentIds(window=10)
    assert [recent.add(i) for i in (5, 7, 6, 7, 5)] == [True, True, True, False, False]
    assert recent.highest == 7 and recent.horizon == 0


def test_recent_ids_remember_a_window_below_the_highest() -> None:
    recent = RecentIds(window=10)
    for i in range(1, 101):
        assert recent.add(i)
    assert recent.horizon == 90
    assert not recent.add(91) and not recent.add(100)  # inside the window: seen
    # below the horizon nothing is known: a late local commit still goes out; catch-ups
    # never read there (they read above ``horizon``)
    assert recent.add(50)
    assert 50 not in recent and 95 in recent
    assert len(recent._ids) <= 2 * recent.window  # pruned: memory stays bounded


def _event(event_id: int | None) -> Event:
    return Event(id=event_id, kind="state", mac="52:54:00:00:10:01", detail={})


def test_the_bus_publishes_an_id_once_and_says_what_it_published() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    two, three, again, one, progress = _event(2), _event(3), _event(3), _event(1), _event(None)
    assert bus.publish([two, three]) == [two, three]
    assert bus.publish([again, one, progress]) == [one, progress]
    delivered = []
    while not sub.queue.empty():
        item = sub.queue.get_nowait()
        assert item is not None
        delivered.append(item["id"])
    assert delivered == [2, 3, 1, None]  # id 3 once; events without a row always pass


def test_the_cursor_is_a_plain_id_while_ids_arrive_in_order() -> None:
    cursor = Cursor(40)
    for event_id in (41, 42, 43):
        cursor.add(event_id)
    assert str(cursor) == "43" and Cursor.parse("43").holes == set()


def test_the_cursor_waits_for_an_id_that_commits_late() -> None:
    cursor = Cursor(40)
    cursor.add(42)  # 41 was drawn first but has not committed yet
    assert str(cursor) == "42/41"
    assert cursor.sent(42) and cursor.sent(40) and not cursor.sent(41) and not cursor.sent(43)
    resumed = Cursor.parse(str(cursor))  # what the browser sends back as Last-Event-ID
    assert (resumed.high, resumed.holes) == (42, {41})
    resumed.add(41)
    assert str(resumed) == "42"


def test_the_cursor_stays_small() -> None:
    cursor = Cursor(0)
    cursor.add(100_000)  # a jump: only the newest ids below are waited for
    assert len(cursor.holes) == MAX_HOLES and max(cursor.holes) == 99_999
    cursor.add(100_000 + WINDOW + 1)  # old holes age out
    assert min(cursor.holes) > 100_000
    assert len(str(cursor)) < 1000


@pytest.mark.parametrize(
    "text",
    [
        *("x", "-1", "+4", "4_2", "\uff14\uff12", "42/", "42/41.x", "42/42", "42/43", "1e3"),
        f"5000/{5000 - WINDOW - 1}",  # a hole older than any this server keeps
        "10000/" + ".".join(str(10000 - i) for i in range(1, MAX_HOLES + 2)),
    ],
)
def test_cursors_this_server_never_sent_are_refused(text: str) -> None:
    with pytest.raises(BadCursor):
        Cursor.parse(text)
