"""HTTP range and validator rules for image bytes (RFC 9110 §13, §14), as pure functions.

An image is served whole or as one byte range. The validator is a strong ETag derived from the
image's sha256, so "same ETag" means "same bytes" and a resumed download can never splice two
different images together (RFC 9110 §13.1.5 If-Range).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime

_INT_RANGE = re.compile(r"^(\d{1,19})-(\d{0,19})$")
_SUFFIX_RANGE = re.compile(r"^-(\d{1,19})$")
_ETAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')


def etag_for(sha256: str) -> str:
    """The strong entity tag of an image: its content hash, so equal tags mean equal bytes."""
    return f'"sha256-{sha256}"'


def http_date(mtime_ns: int) -> str:
    return formatdate(mtime_ns / 1e9, usegmt=True)


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"  # RFC 9110 §14.4


class RangeError(ValueError):
    """The Range header cannot be honoured: answer 416 with ``Content-Range: bytes */size``."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range ``header`` asks for, clamped to ``size``; None means the whole image.

    RFC 9110 §14.2: a Range with a unit other than ``bytes`` is ignored (None). A ``bytes`` range
    that is malformed, asks for several ranges, or starts at or past the end raises
    :class:`RangeError` (§15.5.17 allows 416 for invalid ranges): an agent that asked for part of
    an image must never receive the whole image by surprise.
    """
    if header is None or not header.strip():
        return None
    unit, eq, spec = header.strip().partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None  # §14.2: an unknown range unit MUST be ignored
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 1:
        raise RangeError(
            f"{len(parts)} ranges requested; ask for one range per request (bytes=FIRST-LAST)"
        )
    part = parts[0]
    if m := _SUFFIX_RANGE.match(part):
        suffix = int(m.group(1))
        if suffix == 0 or size == 0:
            raise RangeError(f"range {part!r} selects no bytes of a {size}-byte image")
        return ByteRange(max(0, size - suffix), size - 1)  # §14.1.3: last N bytes
    m = _INT_RANGE.match(part)
    if not m:
        raise RangeError(
            f"malformed Range {header.strip()!r}; use bytes=FIRST-LAST or bytes=FIRST-"
        )
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) else None
    if last is not None and last < first:
        raise RangeError(f"malformed Range {header.strip()!r}: last byte is before first byte")
    if first >= size:
        raise RangeError(f"range starts at byte {first}; the image has {size} bytes")
    return ByteRange(first, size - 1 if last is None or last >= size else last)


def etags_in(header: str) -> list[tuple[bool, str]] | None:
    """``If-Match``/``If-None-Match`` as (weak, tag) pairs; None for ``*`` (matches anything)."""
    if header.strip() == "*":
        return None
    tags: list[tuple[bool, str]] = []
    pos = 0
    while pos < len(header):
        m = _ETAG.match(header, pos)
        if not m:
            break  # the rest is not an entity-tag list; what parsed so far still counts
        tags.append((bool(m.group(1)), m.group(2)))
        pos = m.end()
    return tags


def if_match_fails(header: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.1: strong comparison; a weak tag never matches."""
    if header is None:
        return False
    tags = etags_in(header)
    return tags is not None and not any(not weak and tag == etag for weak, tag in tags)


def if_none_match_hits(header: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison; a hit on GET/HEAD means 304 Not Modified."""
    if header is None:
        return False
    tags = etags_in(header)
    return tags is None or any(tag == etag for _weak, tag in tags)


def if_range_allows(header: str | None, etag: str, last_modified: str) -> bool:
    """RFC 9110 §13.1.5: True when the Range applies (no If-Range, or it names these bytes).

    A weak entity tag never matches (strong comparison). An HTTP-date matches only when it equals
    our Last-Modified exactly; any other value means "send the whole, current image".
    """
    if header is None:
        return True
    value = header.strip()
    if value.startswith(("W/", '"')):
        return value == etag
    try:
        return parsedate_to_datetime(value) == parsedate_to_datetime(last_modified)
    except (TypeError, ValueError):
        return False
