"""RepoContext: the per-file facts of a checkout, its digest, and the views other layers consume."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypernet.context.analysis import Analysis, RankedDefinition, analyse
from hypernet.context.extract import extract_many
from hypernet.context.model import EXTRACTOR_VERSION, Assertion, FileFacts, Import
from hypernet.context.render import render_context, render_items
from hypernet.context.walk import walk


def compute_digest(files: dict[str, FileFacts]) -> str:
    """sha256 over (extractor version, sorted (path, content sha256)); independent of order and mtimes."""
    h = hashlib.sha256(f"code2lora-context/{EXTRACTOR_VERSION}\n".encode())
    for p in sorted(files):
        h.update(f"{p}\0{files[p].sha256}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


@dataclass
class RepoContext:
    """Everything extracted from one checkout. Equality compares the primary data only."""

    files: dict[str, FileFacts]
    skipped: dict[str, str]  # path (directories end with '/') -> reason
    digest: str
    max_file_bytes: int = 1_000_000
    max_files: int = 20_000
    truncated: bool = False
    version: str = EXTRACTOR_VERSION
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, files: dict[str, FileFacts], skipped: dict[str, str], *, max_file_bytes: int, max_files: int,
              truncated: bool = False) -> RepoContext:
        """Assemble a context and compute its digest."""
        return cls(files, skipped, compute_digest(files), max_file_bytes, max_files, truncated)

    # ------------------------------------------------------------------ derived views

    @property
    def analysis(self) -> Analysis:
        """Import graph, ranking and conventions, computed on first use and cached."""
        if "analysis" not in self._cache:
            self._cache["analysis"] = analyse(self.files)
        return self._cache["analysis"]

    @property
    def stats(self) -> dict[str, Any]:
        """Counts: files, bytes, lines, definitions, imports, assertions, errors, skipped by reason."""
        by_lang: dict[str, int] = {}
        skipped: dict[str, int] = {}
        for f in self.files.values():
            by_lang[f.language] = by_lang.get(f.language, 0) + 1
        for why in self.skipped.values():
            skipped[why] = skipped.get(why, 0) + 1
        fs = self.files.values()
        return {
            "files": len(self.files),
            "by_language": dict(sorted(by_lang.items())),
            "bytes": sum(f.size for f in fs),
            "lines": sum(f.lines for f in fs),
            "definitions": sum(len(f.definitions) for f in fs),
            "constants": sum(len(f.constants) for f in fs),
            "imports": sum(len(f.imports) for f in fs),
            "assertions": sum(len(f.assertions) for f in fs),
            "files_with_parse_errors": sum(1 for f in fs if f.errors),
            "skipped": dict(sorted(skipped.items())),
            "skipped_total": len(self.skipped),
            "truncated": self.truncated,
        }

    @property
    def conventions(self) -> dict[str, Any]:
        """Naming, typing, docstring, test framework and formatting conventions."""
        return self.analysis.conventions

    @property
    def import_graph(self) -> dict[str, list[str]]:
        """path -> repository files it imports."""
        return self.analysis.import_graph

    def ranked_definitions(self, *, include_private: bool = False, include_tests: bool = False) -> list[RankedDefinition]:
        """Definitions (and constants) by how much the rest of the repository uses them, best first."""
        files = self.files
        return [
            r for r in self.analysis.ranked
            if (include_private or r.definition.exported) and (include_tests or not files[r.path].is_test)
        ]

    def imports_of(self, path: str) -> list[tuple[Import, str]]:
        """A file's imports with their kind: stdlib, internal, third_party (or unknown)."""
        return list(zip(self.files[path].imports, self.analysis.import_kinds[path], strict=False))

    @property
    def references(self) -> dict[str, dict[str, int]]:
        """path -> {name defined in another repository file: number of uses in this file}."""
        return self.analysis.references

    def api_surface(self) -> dict[str, list[str]]:
        """Public names and signatures per non-test file (honours Python `__all__`)."""
        out: dict[str, list[str]] = {}
        for p in sorted(self.files):
            f = self.files[p]
            if f.is_test:
                continue
            allowed = set(f.exports) if f.exports is not None else None
            sigs = []
            for d in f.definitions:
                top = d.qualname.split(".", 1)[0]
                if d.exported and (allowed is None or top in allowed):
                    sigs.append(f"{d.qualname}: {d.signature}")
            for c in f.constants:
                if not c.name.startswith("_") and (allowed is None or c.name in allowed):
                    sigs.append(f"{c.name}: constant")
            if sigs:
                out[p] = sigs
        return out

    def defined_identifiers(self) -> set[str]:
        """Every name the repository defines (functions, methods, classes, constants)."""
        names: set[str] = set()
        for f in self.files.values():
            names.update(d.name for d in f.definitions)
            names.update(c.name for c in f.constants)
        return names

    def assertions(self) -> list[Assertion]:
        """All assertion-completion examples, by path then line."""
        return [a for p in sorted(self.files) for a in self.files[p].assertions]

    def render(self, budget_tokens: int = 2048, count_tokens: Callable[[str], int] | None = None) -> str:
        """Text of the most important APIs that fits `budget_tokens` (see `render.render_context`)."""
        return render_context(self, budget_tokens, count_tokens)

    def render_items(self, max_items: int = 256) -> list[str]:
        """Short text items, most important first, for a sentence encoder."""
        return render_items(self, max_items)

    def summary(self, top: int = 15) -> dict[str, Any]:
        """Counts, top APIs, dependencies and conventions."""
        a = self.analysis
        return {
            "digest": self.digest,
            "stats": self.stats,
            "top_apis": [f"{r.path}: {r.definition.signature}" for r in self.ranked_definitions()[:top]],
            "third_party": [m for m, _ in sorted(a.external.get("third_party", {}).items(), key=lambda kv: (-kv[1], kv[0]))][:top],
            "stdlib": [m for m, _ in sorted(a.external.get("stdlib", {}).items(), key=lambda kv: (-kv[1], kv[0]))][:top],
            "import_edges": sum(len(v) for v in a.import_graph.values()),
            "conventions": a.conventions,
        }

    # ------------------------------------------------------------------ serialisation

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict; `analysis` is informative and recomputed by `from_json`."""
        a = self.analysis
        files = {}
        for p in sorted(self.files):
            d = self.files[p].to_json()
            files[p] = d
        return {
            "version": self.version,
            "digest": self.digest,
            "max_file_bytes": self.max_file_bytes,
            "max_files": self.max_files,
            "truncated": self.truncated,
            "files": files,
            "skipped": dict(sorted(self.skipped.items())),
            "stats": self.stats,
            "analysis": {
                "import_kinds": a.import_kinds,
                "import_graph": a.import_graph,
                "external": a.external,
                "conventions": a.conventions,
                "ranked": [[r.path, r.definition.qualname, r.definition.kind, r.score] for r in a.ranked[:500]],
            },
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RepoContext:
        """Inverse of `to_json`."""
        return cls(
            files={p: FileFacts.from_json(f) for p, f in d["files"].items()},
            skipped=dict(d["skipped"]),
            digest=d["digest"],
            max_file_bytes=d["max_file_bytes"],
            max_files=d["max_files"],
            truncated=d["truncated"],
            version=d["version"],
        )

    def to_json_text(self) -> str:
        """Canonical JSON text."""
        return json.dumps(self.to_json(), sort_keys=True)


def extract_repo(root: Path, *, max_file_bytes: int = 1_000_000, max_files: int = 20_000,
                 workers: int | None = None) -> RepoContext:
    """Full extraction of the working tree at `root` (.gitignore respected; git itself not needed)."""
    root = Path(root)
    w = walk(root, max_file_bytes)
    candidates = w.files
    skipped = dict(w.skipped)
    truncated = len(candidates) > max_files
    if truncated:
        for p in candidates[max_files:]:
            skipped[p] = "max_files"
        candidates = candidates[:max_files]
    files: dict[str, FileFacts] = {}
    for rel, res in zip(candidates, extract_many(root, candidates, workers), strict=False):
        if isinstance(res, str):
            skipped[rel] = res
        else:
            files[rel] = res
    return RepoContext.build(files, skipped, max_file_bytes=max_file_bytes, max_files=max_files, truncated=truncated)
