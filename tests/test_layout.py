"""The server package's folders tell its architecture; these rules keep them honest.

common/ is the bottom layer; shard/ and embedding/ build on it; the coordinator builds on those
(it borrows the shard engine's faiss k-means, and hosts shard services for local shards); cli/ and
bench/ sit on top. No module imports
"upwards", and there are no import cycles between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "server" / "vecshard_server"

# layer -> the vecshard_server packages (or modules) it may import
ALLOWED = {
    "common": {"common"},
    "shard": {"common", "shard"},
    "embedding": {"common", "embedding"},
    "coordinator": {"common", "embedding", "coordinator", "shard.engine", "shard.service"},
    "cli": {"common", "embedding", "coordinator", "shard", "cli", "bench"},
    "bench": {"common", "embedding", "bench", "cli.cluster"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vecshard_server"):
            base = node.module.removeprefix("vecshard_server").lstrip(".")
            found.add(base)
            found.update(f"{base}.{a.name}" if base else a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                a.name.removeprefix("vecshard_server.") for a in node.names if a.name.startswith("vecshard_server.")
            )
    return found


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
        for imported in _imports(path, top_level_only=False):
            if imported not in modules:
                continue  # a name imported from a module, checked through its module
            if not any(imported == a or imported.startswith(a + ".") for a in ALLOWED[layer]):
                bad.append(f"{name} imports {imported}")
    assert bad == [], "\n".join(bad)


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {
        name: {i for i in _imports(path, top_level_only=True) if i in modules and i != name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name)
