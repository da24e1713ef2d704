"""The layering DESIGN.md promises, checked on every run (the import contracts themselves are in
pyproject.toml and run by `lint-imports` in ./dev test; these are what they cannot say).

- no import cycle among netdeploy's modules, counting function-local and TYPE_CHECKING imports;
- few function-local imports, each with a comment saying why;
- no module outside netdeploy/rollout/ writes a node's state, token, or a cluster's gate: the
  rollout writer is the one writer (DESIGN "One writer").
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "netdeploy"
MAX_LOCAL_IMPORTS = 10
# a comment on the line above an assignment to another table's ``state`` (a capture's)
NOT_NODE_STATE = "# not a node's state"
# columns only the rollout writer changes (nodes.*, clusters.*)
WRITER_COLUMNS = {
    "state",
    "state_since",
    "token",
    "token_rollout",
    "token_phase",
    "claim",
    "claim_ip",
    "claim_prev",
    "report_token",
    "alarm",
    "release_seq",
    "gate",
    "gate_detail",
    "formed_at",
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imported(name: str, node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    """The netdeploy modules an import statement of module ``name`` names."""
    if isinstance(node, ast.Import):
        wanted = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = name.split(".")
            if known[name].name != "__init__.py":
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        wanted = [f"{base}.{alias.name}" for alias in node.names] + [base]
    out = []
    for target in wanted:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.append(target)
    return out


class Imports(ast.NodeVisitor):
    def __init__(self, name: str, known: dict[str, Path]) -> None:
        self.name, self.known = name, known
        self.targets: set[str] = set()
        self.local: list[int] = []  # line numbers of function-local netdeploy imports
        self.depth = 0

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        names = imported(self.name, node, self.known)
        self.targets.update(names)
        if self.depth and names:
            self.local.append(node.lineno)

    visit_ImportFrom = visit_Import


def graph() -> tuple[dict[str, set[str]], dict[str, list[int]]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    local: dict[str, list[int]] = {}
    for name, path in known.items():
        visitor = Imports(name, known)
        visitor.visit(ast.parse(path.read_text()))
        edges[name] = visitor.targets
        if visitor.local:
            local[name] = visitor.local
    return edges, local


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_netdeploy_modules() -> None:
    edges, _ = graph()
    assert len(edges) > 50  # the walk found the package
    assert cycles(edges) == []


def test_function_local_imports_are_few_and_explained() -> None:
    _, local = graph()
    lines = [(name, line) for name, numbers in local.items() for line in numbers]
    assert len(lines) <= MAX_LOCAL_IMPORTS, lines
    known = modules()
    for name, line in lines:
        source = known[name].read_text().splitlines()
        said = source[line - 1] + source[line - 2]
        assert "#" in said, f"{known[name]}:{line}: say why this import is inside a function"


def writes_to_writer_columns(tree: ast.AST) -> list[tuple[int, str]]:
    """Assignments to a node/cluster column the writer owns, and calls of ``set_state``."""
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        while targets:
            target = targets.pop()
            if isinstance(target, ast.Tuple | ast.List):
                targets.extend(target.elts)
            elif isinstance(target, ast.Attribute) and target.attr in WRITER_COLUMNS:
                found.append((node.lineno, f".{target.attr} ="))
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("set_state", "discover", "move"):
                found.append((node.lineno, f"{called}()"))
            if called in ("Node", "Cluster") and any(
                k.arg in WRITER_COLUMNS for k in node.keywords
            ):
                found.append((node.lineno, f"{called}(state=...)"))
    return found


def test_the_column_scanner_sees_writes() -> None:
    tree = ast.parse(
        "node.state = 'held'\nrow.token, x = t, 1\nset_state(s, n, 'x')\nc[v.state] = 1\n"
    )
    assert [line for line, _ in writes_to_writer_columns(tree)] == [1, 2, 3]


def test_only_the_rollout_writer_changes_node_state_tokens_and_gates() -> None:
    offenders: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for name, path in modules().items():
        if name.startswith("netdeploy.rollout"):
            continue
        source = path.read_text()
        if "Node" not in source and "Cluster" not in source and "NodeRow" not in source:
            continue  # a module that never sees a node row cannot write one
        lines = source.splitlines()
        offenders[name] = [
            (line, what)
            for line, what in writes_to_writer_columns(ast.parse(source))
            # another table's column of the same name, said on the line above
            if NOT_NODE_STATE not in lines[line - 2]
        ]
    assert {k: v for k, v in offenders.items() if v} == {}
