"""The layering is enforced, not conventional: every import statement in src/vidcap (module level and
inside functions) goes to the same floor or a lower one of `vidcap.layers.FLOORS`, and the import graph has
no circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vidcap.layers import FLOORS, floor_of

SRC = Path(__file__).parents[1] / "src" / "vidcap"


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the vidcap modules it imports (anywhere in its file)."""
    mods = {module_name(p, src): p for p in src.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                while name and name not in mods and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in mods and name != mod:
                    targets.add(name)
                    break
        graph[mod] = targets
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{m} ({FLOORS[floor_of(m)][0]}) imports {t} ({FLOORS[floor_of(t)][0]})"
        for m, ts in sorted(graph.items())
        for t in sorted(ts)
        if floor_of(t) > floor_of(m)
    ]


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_floor():
    for mod in import_graph():
        floor_of(mod)


def test_no_import_runs_up_a_floor():
    assert upward_imports(import_graph()) == []


def test_the_import_graph_has_no_circle():
    assert circles(import_graph()) == []


def test_the_checks_catch_a_planted_circle_and_a_planted_upward_import(tmp_path):
    """The same checks over a copy of src/ with one function-level import planted in it fail."""
    import shutil

    copy = tmp_path / "vidcap"
    shutil.copytree(SRC, copy)
    storage = copy / "storage.py"
    storage.write_text(storage.read_text() + "\n\ndef _planted():\n    from .session import Session  # noqa\n")
    graph = import_graph(copy)
    assert any("vidcap.storage (data) imports vidcap.session (session)" in e for e in upward_imports(graph))
    assert any("vidcap.storage" in group and "vidcap.session" in group for group in circles(graph))


@pytest.mark.parametrize(
    "name,floor",
    [
        ("vidcap.errors", "base"),
        ("vidcap.backends.registry", "models"),
        ("vidcap.runners.multigpu", "executors"),
        ("vidcap.gpus", "base"),
        ("vidcap.tags.stats", "app"),
    ],
)
def test_the_map_places_modules(name, floor):
    assert FLOORS[floor_of(name)][0] == floor
