"""The import graph of ``hypernet/`` and ``service/``: no cycle between modules, dependencies point one way.

Every module's AST is walked: imports at module level, inside functions and under ``if TYPE_CHECKING:``
alike, since an import moved into a function still is a dependency. A ``from pkg import name`` counts as an
import of ``pkg.name`` when that is a module, else of ``pkg``. A package's ``__init__`` being run on the
way to one of its submodules is not counted as an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("hypernet", "service")
LAYERS = ("hypernet", "service", "training", "code2lora", "testkit")
# Who may not import whom (DESIGN.md, "Layers": service -> hypernet, training -> hypernet). testkit/ (helpers for
# tests/ and bench/, not installed) sits on top: it may import the library, but nothing that ships imports it.
FORBIDDEN = {
    "hypernet": ("service", "training", "code2lora", "testkit"),
    "service": ("training", "code2lora", "testkit"),
    "training": ("testkit",),
    "code2lora": ("testkit",),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for top in LAYERS:
        for path in sorted((ROOT / top).rglob("*.py")):
            out[_module_name(path)] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    found.add(target)
                elif base in known:
                    found.add(base)
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def _cycles(graph: dict[str, set[str]], nodes: list[str]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
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
                out.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> str:
    return module.split(".", 1)[0]


def test_graph_sees_function_level_and_type_checking_imports() -> None:
    graph = _graph()
    assert "service.db.models" in graph["service.jobs.runner"]
    # function-level imports count: the refine job imports the hypernetwork's refinement inside its body
    assert "hypernet.refine" in graph["service.jobs.refine"]
    # so do imports under `if TYPE_CHECKING:` (service.jobs.queue names ServiceState only there)
    assert "service.state" in graph["service.jobs.queue"]
    # testkit's modules are in the graph, so the layering holds for them too
    assert "hypernet.checkpoint" in graph["testkit.models"]
    assert len(graph) > 100


def test_no_import_cycle_in_hypernet_or_service() -> None:
    graph = _graph()
    checked = {m: {t for t in deps if _layer(t) in CHECKED} for m, deps in graph.items() if _layer(m) in CHECKED}
    cycles = _cycles(checked, sorted(checked))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_layers_import_one_way() -> None:
    graph = _graph()
    wrong = sorted(
        f"{module} -> {target}"
        for module, deps in graph.items()
        for target in deps
        if _layer(target) in FORBIDDEN.get(_layer(module), ())
    )
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_benchmarks_and_testkit_do_not_import_the_tests() -> None:
    wrong = []
    for top in ("bench", "testkit"):
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                wrong += [f"{path.relative_to(ROOT)} -> {n}" for n in names if n == "tests" or n.startswith("tests.")]
    assert not wrong, "shared helpers belong in testkit/:\n" + "\n".join(wrong)
