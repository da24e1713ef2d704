"""Range and validator rules of RFC 9110 as pure functions."""

from __future__ import annotations

import pytest

from netdeploy.images.ranges import (
    ByteRange,
    RangeError,
    etag_for,
    http_date,
    if_match_fails,
    if_none_match_hits,
    if_range_allows,
    parse_range,
)

SIZE = 1000
ETAG = etag_for("ab" * 32)
DATE = http_date(1_700_000_000_123_456_789)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("items=0-5", None),  # §14.2: unknown unit ignored
        ("bytes=0-0", ByteRange(0, 0)),
        ("bytes=0-999", ByteRange(0, 999)),
        ("bytes=10-", ByteRange(10, 999)),
        ("bytes=990-5000", ByteRange(990, 999)),  # clamped
        ("bytes=-10", ByteRange(990, 999)),
        ("bytes=-5000", ByteRange(0, 999)),  # suffix longer than the image: all of it
        ("Bytes = 5-6", ByteRange(5, 6)),
        ("bytes= 5-6 ", ByteRange(5, 6)),
    ],
)
def test_parse_range(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1000-",
        "bytes=5000-6000",
        "bytes=-0",
        "bytes=6-5",
        "bytes=abc",
        "bytes=",
        "bytes=-",
        "bytes=1-2,3-4",
        "bytes=0x10-",
        "bytes=" + "9" * 25 + "-",
        "bytes=1 - 2",
    ],
)
def test_parse_range_refuses(header: str) -> None:
    with pytest.raises(RangeError):
        parse_range(header, SIZE)


def test_empty_image_has_no_satisfiable_range() -> None:
    for header in ("bytes=0-", "bytes=-1"):
        with pytest.raises(RangeError):
            parse_range(header, 0)


def test_byte_range_content_range() -> None:
    r = ByteRange(10, 19)
    assert (r.length, r.content_range(SIZE)) == (10, "bytes 10-19/1000")


def test_if_range() -> None:
    assert if_range_allows(None, ETAG, DATE)
    assert if_range_allows(ETAG, ETAG, DATE)
    assert not if_range_allows(f"W/{ETAG}", ETAG, DATE)  # strong comparison only
    assert not if_range_allows('"sha256-other"', ETAG, DATE)
    assert if_range_allows(DATE, ETAG, DATE)
    assert not if_range_allows("Sun, 06 Nov 1994 08:49:37 GMT", ETAG, DATE)
    assert not if_range_allows("garbage", ETAG, DATE)


def test_if_match_and_if_none_match() -> None:
    assert not if_match_fails(None, ETAG)
    assert not if_match_fails("*", ETAG)
    assert not if_match_fails(f'"x", {ETAG}', ETAG)
    assert if_match_fails(f"W/{ETAG}", ETAG)  # §13.1.1: strong comparison
    assert if_match_fails('"x"', ETAG)
    assert if_none_match_hits("*", ETAG)
    assert if_none_match_hits(f"W/{ETAG}", ETAG)  # §13.1.2: weak comparison
    assert not if_none_match_hits('"x"', ETAG)
    assert not if_none_match_hits(None, ETAG)
