"""Plain dataclasses for per-file facts; every field is JSON-friendly so contexts round-trip."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Bump when extraction output changes: it is part of the digest, so cached adapters are invalidated.
EXTRACTOR_VERSION = "1"


@dataclass
class Import:
    """One imported name: `from module import name as alias` or `import module as alias`."""

    module: str
    name: str | None = None
    alias: str | None = None
    level: int = 0
    line: int = 0
    resolved: str = ""  # absolute module (relative imports resolved against the file's package)


@dataclass
class Param:
    """One parameter; splats keep their `*`/`**` prefix, bare `*` and `/` separators are params too."""

    name: str
    annotation: str | None = None
    default: str | None = None


@dataclass
class Definition:
    """A function, method, class or other named declaration."""

    name: str
    qualname: str
    kind: str
    line: int
    end_line: int
    signature: str
    params: list[Param] = field(default_factory=list)
    returns: str | None = None
    bases: list[str] = field(default_factory=list)
    decorators: list[str] = field(default_factory=list)
    doc: str = ""
    is_async: bool = False
    exported: bool = True


@dataclass
class Constant:
    """A module-level constant (UPPER_CASE assignment, or `const`/`static` elsewhere)."""

    name: str
    line: int
    annotation: str | None = None
    value: str = ""


@dataclass
class Assertion:
    """An assertion-completion example: `prefix` + `target` reproduces the source up to the target's end."""

    file: str
    line: int
    prefix: str
    target: str
    kind: str  # "assert" or the unittest method name, e.g. "assertEqual"


@dataclass
class FileFacts:
    """Everything extracted from one file; a pure function of (path, bytes)."""

    path: str
    language: str
    sha256: str
    size: int
    lines: int
    module: str = ""
    is_test: bool = False
    imports: list[Import] = field(default_factory=list)
    definitions: list[Definition] = field(default_factory=list)
    constants: list[Constant] = field(default_factory=list)
    exports: list[str] | None = None  # Python `__all__` when it is a literal list
    uses: dict[str, int] = field(default_factory=dict)  # referenced names (calls, types, bases, imports)
    assertions: list[Assertion] = field(default_factory=list)
    conv: dict[str, int] = field(default_factory=dict)  # convention counters, summed at repo level
    errors: int = 0  # tree-sitter ERROR/MISSING nodes; what parsed around them is kept

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FileFacts:
        """Inverse of `to_json`."""
        kw = dict(d)
        kw["imports"] = [Import(**i) for i in d.get("imports", [])]
        kw["definitions"] = [
            Definition(**{**x, "params": [Param(**p) for p in x.get("params", [])]}) for x in d.get("definitions", [])
        ]
        kw["constants"] = [Constant(**c) for c in d.get("constants", [])]
        kw["assertions"] = [Assertion(**a) for a in d.get("assertions", [])]
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in kw.items() if k in names})
