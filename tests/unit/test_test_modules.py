"""Rules of the test tree itself.

It has no __init__.py files, so pytest imports each test module by its basename: two test
files with the same name in different folders stop the whole run at collection (a fresh CI
checkout has no stale bytecode to hide it). Helpers every kind of test needs live once, in
tests/conftest.py, instead of a copy per module."""

from __future__ import annotations

import ast
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


def _file_hashing(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of each place that hashes a whole file: a function that opens a file and
    feeds a sha256 (``hashlib.sha256()`` then ``update``, or ``hashlib.file_digest``), or
    ``hashlib.sha256(X.read_bytes())`` of all of X."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            calls = [c for c in ast.walk(node) if isinstance(c, ast.Call)]
            opens = any(ast.unparse(c.func) == "open" for c in calls)
            hashes = any(
                ast.unparse(c.func) == "hashlib.file_digest"
                or (ast.unparse(c.func) == "hashlib.sha256" and not c.args)
                for c in calls
            )
            if opens and hashes:
                found.append((node.lineno, f"def {node.name}"))
        if (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) == "hashlib.sha256"
            and node.args
            and isinstance(node.args[0], ast.Call)
            and isinstance(node.args[0].func, ast.Attribute)
            and node.args[0].func.attr == "read_bytes"
        ):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_files_are_hashed_by_the_one_helper() -> None:
    """``sha256_of`` in tests/conftest.py: there were three (and hashes of whole files read
    into memory, up to a 96 MiB disk)."""
    places = []
    for path in sorted(TESTS.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        for line, what in _file_hashing(ast.parse(path.read_text(), str(path))):
            places.append(f"{path.relative_to(TESTS)}:{line}: {what}")
    others = [p for p in places if not (p.startswith("conftest.py:") and p.endswith(" sha256_of"))]
    assert not others, "use sha256_of from tests.conftest:\n" + "\n".join(others)
    assert len(places) == 1, places  # and tests/conftest.py has it
