"""Text renderings of a RepoContext: a token-budgeted repo map and short items for an encoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from hypernet.context.analysis import Analysis, RankedDefinition
from hypernet.context.model import FileFacts
from hypernet.context.textutil import clip


class RepoContext(Protocol):
    """What rendering reads of `hypernet.context.repo.RepoContext` (which calls into this module)."""

    digest: str
    files: dict[str, FileFacts]

    @property
    def analysis(self) -> Analysis: ...

    @property
    def stats(self) -> dict[str, Any]: ...

    @property
    def conventions(self) -> dict[str, Any]: ...

    def ranked_definitions(self, *, include_private: bool = False,
                           include_tests: bool = False) -> list[RankedDefinition]: ...

MAX_CANDIDATES = 2000


def estimate_tokens(text: str) -> int:
    """Cheap token estimate (~4 characters per token for code)."""
    return (len(text) + 3) // 4


def _header(ctx: RepoContext) -> list[str]:
    st = ctx.stats
    conv = ctx.conventions
    langs = ", ".join(f"{k} {v}" for k, v in st["by_language"].items()) or "no source files"
    lines = [f"# Repository context {ctx.digest[:12]}: {st['files']} files ({langs})"]
    if st["files"]:
        t, d, fm = conv["typing"], conv["docstrings"], conv["formatting"]
        parts = [f"functions {conv['naming']['functions']}", f"classes {conv['naming']['classes']}"]
        if t["params_annotated"] is not None:
            parts.append(f"params typed {round(100 * t['params_annotated'])}%")
        if t["returns_annotated"] is not None:
            parts.append(f"returns typed {round(100 * t['returns_annotated'])}%")
        if d["coverage"] is not None:
            parts.append(f"docstrings {d['style']} ({round(100 * d['coverage'])}% documented)")
        parts += [f"tests {conv['test_framework']}", f"indent {fm['indent']}", f"quotes {fm['quotes']}",
                  f"lines {fm['line_length']}"]
        lines.append("# Conventions: " + "; ".join(parts))
        ext = ctx.analysis.external
        for kind, label in (("third_party", "third-party"), ("stdlib", "stdlib")):
            mods = sorted(ext.get(kind, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:12]
            if mods:
                lines.append(f"# Uses {label}: " + ", ".join(m for m, _ in mods))
    return lines


def _line(r: RankedDefinition) -> tuple[int, str]:
    d = r.definition
    depth = d.qualname.count(".")
    doc = f"  # {clip(d.doc, 100)}" if d.doc else ""
    return depth, "  " * (depth + 1) + d.signature + doc


def _candidates(ctx: RepoContext) -> list[RankedDefinition]:
    ranked = ctx.ranked_definitions()[:MAX_CANDIDATES]
    # A method needs its class line to be readable: pull the class in just before its first member.
    by_key = {(r.path, r.definition.qualname): r for r in ctx.ranked_definitions()}
    out: list[RankedDefinition] = []
    seen: set[tuple[str, str]] = set()
    for r in ranked:
        parts = r.definition.qualname.split(".")
        for k in range(1, len(parts)):
            parent = by_key.get((r.path, ".".join(parts[:k])))
            if parent is not None and (r.path, parent.definition.qualname) not in seen:
                seen.add((r.path, parent.definition.qualname))
                out.append(parent)
        key = (r.path, r.definition.qualname)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _assemble(header: list[str], chosen: list[RankedDefinition]) -> str:
    order: dict[str, int] = {}
    per_file: dict[str, list[RankedDefinition]] = {}
    for i, r in enumerate(chosen):
        order.setdefault(r.path, i)
        per_file.setdefault(r.path, []).append(r)
    lines = list(header)
    for path in sorted(per_file, key=lambda p: order[p]):
        lines.append(f"{path}:")
        for r in sorted(per_file[path], key=lambda r: (r.definition.line, r.definition.qualname)):
            lines.append(_line(r)[1])
    return "\n".join(lines) + ("\n" if lines else "")


def render_context(ctx: RepoContext, budget_tokens: int = 2048, count_tokens: Callable[[str], int] | None = None) -> str:
    """Header (counts, conventions, dependencies) then files with their top-ranked APIs, within the budget.

    The number of definitions is found by binary search, so the result is measured with the real
    counter (token counts are not additive across lines).
    """
    count = count_tokens or estimate_tokens
    header = _header(ctx)
    while header and count(_assemble(header, [])) > budget_tokens:
        header.pop()
    if not header and budget_tokens <= 0:
        return ""
    cands = _candidates(ctx)
    lo, hi = 0, len(cands)
    # Cheap upper bound first so the binary search starts from a plausible size.
    per_item = max(1, count(_assemble([], cands[:50])) // max(1, min(50, len(cands)))) if cands else 1
    hi = min(hi, max(1, 2 * budget_tokens // per_item))
    while count(_assemble(header, cands[:hi])) <= budget_tokens and hi < len(cands):
        hi = min(len(cands), hi * 2)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(_assemble(header, cands[:mid])) <= budget_tokens:
            lo = mid
        else:
            hi = mid - 1
    return _assemble(header, cands[:lo])


def render_items(ctx: RepoContext, max_items: int = 256) -> list[str]:
    """One short item per important file/definition, most important first."""
    items: list[str] = []
    seen_files: set[str] = set()
    for r in ctx.ranked_definitions():
        if len(items) >= max_items:
            break
        if r.path not in seen_files:
            seen_files.add(r.path)
            f = ctx.files[r.path]
            deps = sorted({i.module for i in f.imports if i.module})[:8]
            names = [d.name for d in f.definitions if d.exported and "." not in d.qualname][:8]
            items.append(clip(f"file {r.path} ({f.language}): imports {', '.join(deps) or '-'}; "
                              f"defines {', '.join(names) or '-'}", 400))
            if len(items) >= max_items:
                break
        d = r.definition
        sig = d.signature
        if "." in d.qualname:
            sig = f"{d.qualname.rsplit('.', 1)[0]}.{sig.replace('def ', '', 1)}"
        items.append(clip(f"{r.path}: {sig}" + (f" — {d.doc}" if d.doc else ""), 400))
    return items
