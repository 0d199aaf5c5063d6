"""Language detection by file extension, and cached tree-sitter parsers/queries per language."""

from __future__ import annotations

import importlib
from functools import cache

from tree_sitter import Language, Parser, Query

EXTENSIONS: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
}

# (python module, attribute holding the language function)
_GRAMMARS: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "java": ("tree_sitter_java", "language"),
}


def language_for(path: str) -> str | None:
    """Language name for a path (by extension), or None when unsupported."""
    if path == "go.mod" or path.endswith("/go.mod"):
        return "gomod"  # read only for its module path, which tells internal Go imports apart
    dot = path.rfind(".")
    return EXTENSIONS.get(path[dot:].lower()) if dot >= 0 else None


@cache
def ts_language(name: str) -> Language:
    """The tree-sitter Language object for a language name."""
    module, attr = _GRAMMARS[name]
    return Language(getattr(importlib.import_module(module), attr)())


@cache
def parser(name: str) -> Parser:
    """A cached parser (one per process and language; parsers are not shared across threads)."""
    return Parser(ts_language(name))


@cache
def query(name: str, source: str) -> Query:
    """A compiled, cached query."""
    return Query(ts_language(name), source)
