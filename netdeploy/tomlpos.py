"""Find the line of a key path in TOML source, so config errors can say ``file:line``.

``tomllib`` returns plain dicts without positions. This scanner follows table headers
(``[a.b]``, ``[[a]]``) and ``key =`` lines well enough to map a validation location such as
``("nodes", 2, "mac")`` to the line that set it; when the exact key is absent (a missing
field) it answers with the line of the closest enclosing table. A multi-line array of inline
tables (``inject = [`` then one ``{ file = ..., fs = ... }`` per line) maps each element and its
keys to the element's own line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'. ]+?)\s*=")
_INLINE_KEY = re.compile(r"(?:\{|,)\s*([A-Za-z0-9_\-]+)\s*=")


def _split_dotted(text: str) -> list[str]:
    parts = re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', text)
    return [p.strip().strip("\"'") for p in parts if p.strip()]


def key_lines(source: str) -> dict[tuple[str | int, ...], int]:
    """Map each table and key path in ``source`` to its 1-based line number."""
    positions: dict[tuple[str | int, ...], int] = {}
    array_counts: dict[tuple[str, ...], int] = {}
    current: tuple[str | int, ...] = ()
    in_multiline = False
    array: tuple[str | int, ...] | None = None  # key path of an open multi-line array
    element = 0
    for lineno, line in enumerate(source.splitlines(), start=1):
        if array is not None:
            stripped = line.strip()
            if stripped.startswith("{"):
                positions.setdefault((*array, element), lineno)
                for name in _INLINE_KEY.findall(stripped):
                    positions.setdefault((*array, element, name), lineno)
                element += 1
            if line.split("#", 1)[0].count("]") > line.count("["):
                array = None
            continue
        if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
            in_multiline = not in_multiline
            if not in_multiline:
                continue
        if in_multiline and not _KEY.match(line):
            continue
        header = _HEADER.match(line)
        if header:
            names = tuple(_split_dotted(header.group(2)))
            if header.group(1) == "[[":
                index = array_counts.get(names, 0)
                array_counts[names] = index + 1
                current = (*names, index)
            else:
                current = names
            positions.setdefault(current, lineno)
            continue
        key = _KEY.match(line)
        if key and not line.lstrip().startswith("#"):
            path = (*current, *_split_dotted(key.group(1)))
            positions.setdefault(path, lineno)
            value = line[key.end() :].split("#", 1)[0].strip()
            if value.startswith("[") and value.count("[") > value.count("]"):
                array, element = path, 0
    return positions


def line_of(source: str, loc: Sequence[str | int]) -> int | None:
    """Line of the longest prefix of ``loc`` that the source defines, or None."""
    positions = key_lines(source)
    path = tuple(loc)
    while path:
        if path in positions:
            return positions[path]
        path = path[:-1]
    return None
