"""Repository-level analysis derived from per-file facts: imports, reference graph, ranking, conventions.

Everything here is a pure function of the `files` mapping, so an incrementally updated context
and a full re-extraction produce the same analysis.
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hypernet.context.imports import build_index, classify
from hypernet.context.model import Constant, Definition, FileFacts

DAMPING = 0.85
MAX_DEFINERS = 16  # names defined in more files than this carry no ranking signal


@dataclass(frozen=True)
class RankedDefinition:
    """A definition with its file and PageRank-derived score."""

    path: str
    definition: Definition
    score: float


@dataclass
class Analysis:
    """Derived, repository-wide facts."""

    import_kinds: dict[str, list[str]] = field(default_factory=dict)  # path -> kind per import, in order
    import_graph: dict[str, list[str]] = field(default_factory=dict)  # path -> internal files it imports
    external: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> top-level module -> files
    references: dict[str, dict[str, int]] = field(default_factory=dict)  # path -> names defined elsewhere -> n
    file_rank: dict[str, float] = field(default_factory=dict)
    ranked: list[RankedDefinition] = field(default_factory=list)
    conventions: dict[str, Any] = field(default_factory=dict)


def constant_definition(c: Constant) -> Definition:
    """A constant seen as a definition of kind `constant` (so it can be ranked and rendered)."""
    sig = c.name + (f": {c.annotation}" if c.annotation else "") + (f" = {c.value}" if c.value else "")
    return Definition(c.name, c.name, "constant", c.line, c.line, sig, exported=not c.name.startswith("_"))


def analyse(files: dict[str, FileFacts]) -> Analysis:
    """Compute the whole analysis for a set of files."""
    # Tens of thousands of small acyclic objects: pausing the cyclic GC avoids repeated full scans
    # of the (large) facts heap, which otherwise costs more than the analysis itself.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _analyse(files)
    finally:
        if enabled:
            gc.enable()


def _analyse(files: dict[str, FileFacts]) -> Analysis:
    a = Analysis()
    paths = sorted(files)
    idx = build_index(files)
    ext: dict[str, dict[str, set[str]]] = {"stdlib": {}, "third_party": {}}
    for p in paths:
        f = files[p]
        kinds: list[str] = []
        targets: set[str] = set()
        for imp in f.imports:
            kind, tg = classify(f, imp, idx)
            kinds.append(kind)
            targets.update(t for t in tg if t != p)
            if kind in ext:
                sep = "::" if f.language == "rust" else ("." if f.language in ("python", "java") else None)
                top = imp.module.split(sep, 1)[0] if sep else imp.module
                ext[kind].setdefault(top or (imp.name or ""), set()).add(p)
        a.import_kinds[p] = kinds
        a.import_graph[p] = sorted(targets)
    a.external = {k: {m: len(v) for m, v in sorted(d.items())} for k, d in ext.items()}
    _rank(files, paths, a)
    a.conventions = conventions(files, paths)
    return a


def _rank(files: dict[str, FileFacts], paths: list[str], a: Analysis) -> None:
    """Aider-style ranking: PageRank over files linked by identifier references, spread onto definitions.

    A definition scores the rank its referencing files hand it plus 1/N per referencing file.
    """
    definers: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        f = files[p]
        seen = {d.name for d in f.definitions}
        seen.update(c.name for c in f.constants)
        for name in seen:
            if name[:2] != "__" or name[-2:] != "__":
                definers.setdefault(name, []).append(i)
    name_ids: dict[str, int] = {name: k for k, name in enumerate(sorted(definers))}
    src_l: list[int] = []
    dst_l: list[int] = []
    w_l: list[float] = []
    ident_l: list[int] = []
    for i, p in enumerate(paths):
        refs: dict[str, int] = {}
        for name, n in files[p].uses.items():
            ds = definers.get(name)
            if not ds:
                continue
            if len(ds) == 1 and ds[0] == i:
                continue  # only defined here: not a reference to elsewhere
            refs[name] = n
            if len(ds) > MAX_DEFINERS:
                continue  # `run`, `setUp`, `get`: defined everywhere, they link nothing specific
            others = [j for j in ds if j != i]
            mul = 1.0
            if name.startswith("_"):
                mul *= 0.1
            if len(ds) > 5:
                mul *= 0.1
            if len(name) >= 8 and ("_" in name or name != name.lower()):
                mul *= 10.0
            w = mul * math.sqrt(n)
            k = len(others)
            src_l.extend([i] * k)
            dst_l.extend(others)
            w_l.extend([w] * k)
            ident_l.extend([name_ids[name]] * k)
        a.references[p] = dict(sorted(refs.items()))
    n = len(paths)
    if n == 0:
        return
    src = np.asarray(src_l, dtype=np.int64)
    dst = np.asarray(dst_l, dtype=np.int64)
    edge_w = np.asarray(w_l, dtype=np.float64)
    out_w = np.bincount(src, weights=edge_w, minlength=n) if len(edge_w) else np.zeros(n)
    norm = edge_w / out_w[src] if len(edge_w) else edge_w
    dangling = out_w == 0
    r = np.full(n, 1.0 / n)
    for _ in range(100):
        flow = np.bincount(dst, weights=r[src] * norm, minlength=n) if len(edge_w) else np.zeros(n)
        new = (1 - DAMPING) / n + DAMPING * (flow + r[dangling].sum() / n)
        if np.abs(new - r).sum() < 1e-12:
            r = new
            break
        r = new
    a.file_rank = {p: float(r[i]) for i, p in enumerate(paths)}
    # Each edge hands the referencing file's rank share to the (defining file, name) pair, plus 1/N
    # per referencing file: without it one helper of a central file outranks an API every file uses.
    name_score: dict[tuple[int, str], float] = {}
    if len(edge_w):
        names = sorted(definers)
        key = dst * len(names) + np.asarray(ident_l, dtype=np.int64)
        uniq, inv = np.unique(key, return_inverse=True)
        sums = np.bincount(inv, weights=r[src] * norm) + np.bincount(inv) / n
        for k, s in zip(uniq.tolist(), sums.tolist(), strict=False):
            name_score[(k // len(names), names[k % len(names)])] = s
    ranked: list[tuple[float, float, str, int, Definition]] = []
    for j, p in enumerate(paths):
        f = files[p]
        fr = float(r[j])
        for d in [*f.definitions, *map(constant_definition, f.constants)]:
            s = name_score.get((j, d.name), 0.0)
            ranked.append((s, fr, p, d.line, d))
    ranked.sort(key=lambda t: (-t[0], -t[1], t[2], t[3]))
    a.ranked = [RankedDefinition(p, d, s) for s, _, p, _, d in ranked]


def _share(c: dict[str, int], keys: tuple[str, ...]) -> dict[str, float]:
    total = sum(c.get(k, 0) for k in keys)
    return {k: round(c.get(k, 0) / total, 3) for k in keys} if total else {}


def _dominant(c: dict[str, int], prefix: str, names: dict[str, str]) -> str:
    counts = {label: c.get(prefix + k, 0) for k, label in names.items()}
    total = sum(counts.values())
    if not total:
        return "unknown"
    best = max(sorted(counts), key=lambda k: counts[k])
    return f"{best} ({round(100 * counts[best] / total)}%)"


_STYLES = {"snake": "snake_case", "camel": "camelCase", "pascal": "PascalCase", "upper": "UPPER_CASE",
           "mixed": "mixed"}


def conventions(files: dict[str, FileFacts], paths: list[str] | None = None) -> dict[str, Any]:
    """Naming, typing coverage, docstring style, test framework and formatting hints."""
    paths = paths if paths is not None else sorted(files)
    c: dict[str, int] = {}
    langs: dict[str, int] = {}
    frameworks: dict[str, int] = {}
    for p in paths:
        f = files[p]
        langs[f.language] = langs.get(f.language, 0) + 1
        for k, v in f.conv.items():
            c[k] = max(c.get(k, 0), v) if k == "max_line" else c.get(k, 0) + v
        if f.is_test:
            for fw in _frameworks(f):
                frameworks[fw] = frameworks.get(fw, 0) + 1
    total_lines = sum(files[p].lines for p in paths) or 1
    limit = next((L for L in (79, 88, 100, 120) if c.get(f"line_over_{L}", 0) / total_lines < 0.002), None)
    doc_keys = ("google", "numpy", "sphinx", "plain")
    n_defs = c.get("funcs", 0) + c.get("classes", 0)
    documented = sum(c.get(f"doc_{k}", 0) for k in doc_keys)
    styled = {k: c.get(f"doc_{k}", 0) for k in doc_keys if k != "plain"}
    doc_style = max(sorted(styled), key=lambda k: styled[k]) if any(styled.values()) else ("plain" if documented else "none")
    indent = max(("tab", "2", "4"), key=lambda k: c.get(f"indent_{k}", 0)) if any(
        c.get(f"indent_{k}", 0) for k in ("tab", "2", "4")) else "unknown"
    quotes_total = c.get("quote_double", 0) + c.get("quote_single", 0)
    return {
        "languages": dict(sorted(langs.items())),
        "naming": {
            "functions": _dominant(c, "name_fn_", _STYLES),
            "classes": _dominant(c, "name_class_", _STYLES),
            "constants": _dominant(c, "name_const_", _STYLES),
        },
        "typing": {
            "params_annotated": round(c.get("params_typed", 0) / c["params"], 3) if c.get("params") else None,
            "returns_annotated": round(c.get("funcs_ret_typed", 0) / c["funcs"], 3) if c.get("funcs") else None,
        },
        "docstrings": {
            "coverage": round(documented / n_defs, 3) if n_defs else None,
            "style": doc_style,
        },
        "test_framework": max(sorted(frameworks), key=lambda k: frameworks[k]) if frameworks else "none",
        "formatting": {
            "indent": {"tab": "tabs", "2": "2 spaces", "4": "4 spaces"}.get(indent, indent),
            "quotes": ("double" if c.get("quote_double", 0) >= c.get("quote_single", 0) else "single")
            if quotes_total else "unknown",
            "line_length": f"<= {limit}" if limit else "> 120",
            "max_line": c.get("max_line", 0),
        },
    }


def _frameworks(f: FileFacts) -> list[str]:
    mods = {i.module.split(".", 1)[0] for i in f.imports}
    if f.language == "python":
        if f.conv.get("test_unittest") or "unittest" in mods and not f.conv.get("test_bare_assert"):
            return ["unittest"]
        if "pytest" in mods or f.conv.get("test_bare_assert") or any(d.name.startswith("test") for d in f.definitions):
            return ["pytest"]
        return []
    if f.language == "go":
        return ["go test"] if any(i.module == "testing" for i in f.imports) else []
    if f.language == "java":
        if any(i.module.startswith("org.junit.jupiter") for i in f.imports):
            return ["junit5"]
        return ["junit"] if any(i.module.startswith("org.junit") for i in f.imports) else []
    if f.language == "rust":
        return ["cargo test"]
    for fw in ("vitest", "jest", "mocha", "ava"):
        if any(i.module.startswith(fw) for i in f.imports):
            return [fw]
    return ["jest"] if {"describe", "expect"} <= set(f.uses) else (["mocha"] if "describe" in f.uses else [])
