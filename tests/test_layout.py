"""The library's layout: no import cycles, no private name imported across modules, short modules.

Every import in a module counts, wherever it is (a function's lazy import too): a cycle through a
lazy import is still a cycle in the design. Read with ``ast``, nothing is imported.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cai_tools"
MAX_LINES = 400
LONG_ALLOWED = {"cai_tools.engines.llama_batched"}   # the batched decoder: one state machine


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]):
    """(module imported, name imported from it or None) for every cai_tools import in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "cai_tools":
                    yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "cai_tools":
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield (submodule, None) if submodule in mods else (target, alias.name)


@functools.lru_cache(maxsize=1)
def _graph():
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    private: list[str] = []
    for name, path in mods.items():
        for target, imported in _imports(name, path, mods):
            assert target in mods, f"{name} imports {target}, which is not a module of cai_tools"
            if target != name:
                graph[name].add(target)
            if imported and imported.startswith("_") and not imported.startswith("__"):
                private.append(f"{name} imports {imported} from {target}")
    return mods, graph, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_import_cycles():
    _, graph, _ = _graph()
    assert _cycles(graph) == []


def test_no_private_names_imported_across_modules():
    _, _, private = _graph()
    assert private == []


def test_modules_are_short():
    mods, _, _ = _graph()
    long = {name: n for name, path in mods.items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES and name not in LONG_ALLOWED}
    assert long == {}


def test_the_checks_see_what_they_check():
    """The analysis itself: it finds the packages, lazy imports, relative imports and a cycle."""
    mods, graph, _ = _graph()
    assert {"cai_tools.models.files", "cai_tools.constitutions.constitution", "cai_tools.cli.main"} <= set(mods)
    assert "cai_tools.models.refs" in graph["cai_tools.engines.registry"]   # a top-level relative import
    assert "cai_tools.train.gguf_cache" in graph["cai_tools.models.refs"]   # a lazy one, in a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert not (PACKAGE / "model_files.py").exists() and not (PACKAGE / "constitution.py").exists()
