"""The package's import graph: no import cycles between modules, and no lower layer importing a higher one.

Every ``import``/``from ... import`` statement counts, including the lazy ones inside functions (they form
the same cycle once both modules are loaded). Layers, lowest first: errors/config/utils, models, data, deploy
(BN folding, export formats, artifacts), then the entry layers engine, viz, bench, cli.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "video_nl"
LOWER = ("config", "utils", "models", "data", "deploy", "errors")
HIGHER = ("engine", "viz", "bench", "cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def import_graph() -> dict[str, set[str]]:
    """Module name -> video_nl modules it imports (``from .x import y`` counts ``.x.y`` when that is a module)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        base = name.split(".") if _is_package(path) else name.split(".")[:-1]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[:len(base) - node.level + 1]
                    stem = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in files else stem for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in files and t != name)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_import_graph_is_read_correctly():
    graph = import_graph()
    assert "video_nl.engine.runtime" in graph["video_nl.engine.train"]
    assert "video_nl.engine.checkpoint" in graph["video_nl.engine.resume"]  # `from . import checkpoint as ckpt`
    assert "video_nl.data.decoders" in graph["video_nl.data.decoding"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_lower_layers_never_import_higher_ones():
    wrong = sorted((m, t) for m, targets in import_graph().items() if _layer(m) in LOWER
                   for t in targets if _layer(t) in HIGHER)
    assert wrong == []
