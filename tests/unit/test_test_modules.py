"""The test tree has no __init__.py files, so pytest imports each test module by its basename:
two test files with the same name in different folders stop the whole run at collection
(a fresh CI checkout has no stale bytecode to hide it)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def test_no_two_test_modules_share_a_basename() -> None:
    where: defaultdict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if "__pycache__" not in path.parts:
            where[path.name].append(str(path.relative_to(TESTS)))
    clashes = {
        name: paths
        for name, paths in where.items()
        if len(paths) > 1 and name not in ("conftest.py", "__init__.py")
    }
    assert not clashes, f"rename one of each: {clashes}"
