"""The server package's folders tell its architecture; these rules keep them honest.

common/ is the bottom layer; shard/ and embedding/ build on it; the coordinator builds on those
(it borrows the shard engine's faiss k-means, and hosts shard services for local shards); cluster/
(a local cluster of role processes, started as `python -m vecshard_server ...`) imports nothing above
common/; cli/ and bench/ sit on top, both using cluster/, and cli/ runs bench/. No module imports
"upwards"; there are no import cycles between modules, counting every import of a module wherever it
is (top level, inside functions, under `if TYPE_CHECKING:`), and none between the role folders.

The hand-written code (server/vecshard_server and client/vecshard, not the generated client/vecshard/v1)
has no class over MAX_CLASS_LINES lines and no function over MAX_FUNCTION_LINES lines but those listed
in OVERSIZE_ALLOWED (each must still be over its limit: the list only shrinks), and no fmt-skip markers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "server" / "vecshard_server"
CLIENT = ROOT / "client" / "vecshard"
GENERATED = CLIENT / "v1"

# layer -> the vecshard_server packages (or modules) it may import
ALLOWED = {
    "common": {"common"},
    "shard": {"common", "shard"},
    "embedding": {"common", "embedding"},
    "coordinator": {"common", "embedding", "coordinator", "shard.engine", "shard.service"},
    "cluster": {"common", "cluster"},
    "cli": {"common", "embedding", "coordinator", "shard", "cluster", "cli", "bench", "ui"},
    "bench": {"common", "embedding", "cluster", "bench"},
    "ui": {"common", "ui"},
}

# (importer, imported): module-level cycles being removed right now. The import of `imported` by
# `importer` is left out of the cycle check; test_known_cycles_still_exist fails once it no longer
# closes a cycle (the allowance cannot go stale): delete the entry then. It held
# ("coordinator.reshard", "coordinator.service"), reshard importing service under TYPE_CHECKING while
# service imports reshard; the coordinator's working tree no longer has that import, so it is empty.
KNOWN_CYCLES_BEING_REMOVED: set[tuple[str, str]] = set()

MAX_CLASS_LINES = 400
MAX_FUNCTION_LINES = 80
# "path relative to server/vecshard_server or client/vecshard:qualified name" -> its size in lines
# today (ast end_lineno - lineno + 1). Being refactored: each entry must still be over its limit
# (else delete it), and nothing new may join.
OVERSIZE_ALLOWED: dict[str, int] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out[".".join(parts)] = path
    return out


def _imports(path: Path) -> set[str]:
    """Every vecshard_server module or name `path` imports, wherever the import statement is (top
    level, in functions, under `if TYPE_CHECKING:`): `from vecshard_server.a import b` gives "a" and "a.b"."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vecshard_server"):
            base = node.module.removeprefix("vecshard_server").lstrip(".")
            found.add(base)
            found.update(f"{base}.{a.name}" if base else a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                a.name.removeprefix("vecshard_server.") for a in node.names if a.name.startswith("vecshard_server.")
            )
    return found


def _module_graph() -> dict[str, set[str]]:
    """module -> the modules it imports (names imported from a module count through the module)."""
    modules = _modules()
    return {name: {i for i in _imports(path) if i in modules and i != name} for name, path in modules.items()}


def _package_graph() -> dict[str, set[str]]:
    """role folder -> the role folders its modules import."""
    graph: dict[str, set[str]] = {}
    for name, imported in _module_graph().items():
        folder = name.split(".")[0]
        graph.setdefault(folder, set()).update(i.split(".")[0] for i in imported)
    for folder, targets in graph.items():
        targets.discard(folder)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph (its nodes in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name)):
            return found
    return None


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def test_every_module_lives_in_a_role_folder() -> None:
    loose = [m for m, path in _modules().items() if "." not in m and path.parent == PKG and m not in {"", "__main__"}]
    assert loose == [], f"modules outside the role folders: {loose}"
    assert {m.split(".")[0] for m in _modules() if "." in m} == set(ALLOWED)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_upward_imports(layer: str) -> None:
    modules = _modules()
    bad = []
    for name, path in modules.items():
        if name.split(".")[0] != layer:
            continue
        for imported in _imports(path):
            if imported not in modules:
                continue  # a name imported from a module, checked through its module
            if not any(imported == a or imported.startswith(a + ".") for a in ALLOWED[layer]):
                bad.append(f"{name} imports {imported}")
    assert bad == [], "\n".join(bad)


def test_no_import_cycles() -> None:
    graph = _module_graph()
    for importer, imported in KNOWN_CYCLES_BEING_REMOVED:
        graph[importer].discard(imported)
    cycle = _cycle(graph)
    assert cycle is None, "import cycle (counting imports in functions and under TYPE_CHECKING): " + " -> ".join(
        cycle or []
    )


def test_known_cycles_still_exist() -> None:
    graph = _module_graph()
    stale = [
        f"{importer} -> {imported}"
        for importer, imported in sorted(KNOWN_CYCLES_BEING_REMOVED)
        if imported not in graph.get(importer, set()) or not _reaches(graph, imported, importer)
    ]
    assert stale == [], f"no longer closing an import cycle: delete from KNOWN_CYCLES_BEING_REMOVED: {stale}"


def test_no_cycles_between_role_folders() -> None:
    cycle = _cycle(_package_graph())
    assert cycle is None, "role folders import each other: " + " -> ".join(cycle or [])


def test_the_cycle_check_sees_hidden_imports(tmp_path: Path) -> None:
    """Imports inside functions and under TYPE_CHECKING count, and a two-module cycle is found."""
    (tmp_path / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vecshard_server.coordinator.service import X\n"
    )
    (tmp_path / "b.py").write_text("def f():\n    import vecshard_server.coordinator.reshard\n")
    assert _imports(tmp_path / "a.py") == {"coordinator.service", "coordinator.service.X"}
    assert _imports(tmp_path / "b.py") == {"coordinator.reshard"}
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


# --- sizes and formatting markers of the hand-written code --------------------------------------


def _hand_written() -> Iterator[tuple[str, Path]]:
    for base in (PKG, CLIENT):
        for path in sorted(base.rglob("*.py")):
            if not path.is_relative_to(GENERATED):
                yield path.relative_to(base.parent.parent if base == CLIENT else PKG).as_posix(), path


def _definitions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    """(qualified name, node) of every class and function, nested ones included ("Cls.method")."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{node.name}"
            yield name, node
            yield from _definitions(node, name + ".")
        else:
            yield from _definitions(node, prefix)


def _oversize() -> dict[str, int]:
    """'file:qualified name' -> lines, of every class over MAX_CLASS_LINES and function over
    MAX_FUNCTION_LINES of the hand-written code."""
    found = {}
    for rel, path in _hand_written():
        for name, node in _definitions(ast.parse(path.read_text())):
            assert isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            if lines > limit:
                found[f"{rel}:{name}"] = lines
    return found


def test_no_new_oversize_classes_or_functions() -> None:
    new = {k: v for k, v in _oversize().items() if k not in OVERSIZE_ALLOWED}
    assert new == {}, (
        f"classes over {MAX_CLASS_LINES} lines or functions over {MAX_FUNCTION_LINES} lines: split them "
        f"(OVERSIZE_ALLOWED lists only those being refactored now): {new}"
    )


def test_oversize_allowance_is_not_stale() -> None:
    found = _oversize()
    stale = sorted(k for k in OVERSIZE_ALLOWED if k not in found)
    assert stale == [], f"no longer over the limit (or gone): delete from OVERSIZE_ALLOWED: {stale}"


def test_no_fmt_skip_markers() -> None:
    marker = "# fmt: " + "skip"  # spelled apart, so that this file has none either
    found = [
        f"{rel}:{i}"
        for rel, path in _hand_written()
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if marker in line
    ]
    assert found == [], f"{len(found)} `{marker}` markers: let ruff format lay the lines out: {found}"


def test_the_architecture_table_states_these_import_rules() -> None:
    """docs/architecture.md's module map table (layer | owns | may import) is the rule this file
    enforces: the two must not drift apart."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = {}
    for line in text.split("## Module map", 1)[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and cells[0] not in {"layer", "---"}:
            rows[cells[0]] = {m.strip() for m in cells[2].split(",")}
    assert rows == ALLOWED
