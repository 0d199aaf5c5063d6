"""Text-level helpers shared by training, evaluation and the service: identifier rules, token marks, string metrics."""

from __future__ import annotations

import builtins
import hashlib
import keyword
import re
import typing
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hypernet.context import RepoContext

IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# an identifier that is not the tail of a longer word or number ("x1foo" holds no identifier "foo")
_WORD_RE = re.compile(r"(?<![A-Za-z0-9_])[A-Za-z_][A-Za-z0-9_]*")

_BUILTIN_TYPES = (str, bytes, bytearray, list, dict, set, frozenset, tuple, int, float, complex, bool, object,
                  BaseException, type, range, slice, memoryview)

# Names too generic to count as repository knowledge even when a repository defines them.
_COMMON = {
    "self", "cls", "args", "kwargs", "data", "name", "value", "values", "result", "main", "test", "setup", "close",
    "open", "read", "write", "update", "items", "keys", "copy", "text", "path", "size", "type", "format", "start",
    "stop", "reset", "clear", "append", "extend", "insert", "remove", "index", "count", "encode", "decode",
    "parse", "load", "dump", "dumps", "loads", "send", "call", "apply", "init", "run", "get", "set", "add", "pop",
    "next", "line", "lines", "file", "files", "node", "nodes", "item", "list", "dict", "info", "error", "errors",
    "warn", "warning", "debug", "message", "default", "options", "config", "content", "context", "event",
    "handler", "callback", "process", "request", "response", "output", "input", "source", "target",
    "field", "fields", "module", "object", "function", "method", "instance", "parent", "child", "children",
    "length", "width", "height", "version", "render", "execute", "check", "validate", "create", "delete",
    "filter", "match", "search", "replace", "split", "join", "strip", "lower", "upper", "flush", "seek", "tell",
    "wait", "connect", "listen", "accept", "bind", "exit", "enter", "repr", "str", "hash", "equal", "__init__",
}
for _t in (str, bytes, list, dict, set, tuple, int, float, object, BaseException):
    _COMMON.update(n for n in dir(_t))
_COMMON.update(dir(builtins))
_COMMON.update(keyword.kwlist)
_COMMON.update(keyword.softkwlist)

# Names that exist in every Python program: builtins, keywords, the public attributes of builtin types, and the
# `typing` names (annotations use them everywhere; producing `Dict` is not inventing a name).
BUILTIN_NAMES: frozenset[str] = frozenset(
    set(dir(builtins)) | set(keyword.kwlist) | set(keyword.softkwlist)
    | {n for t in _BUILTIN_TYPES for n in dir(t) if not n.startswith("_")}
    | {n for n in dir(typing) if not n.startswith("_")}
    | {"self", "cls", "args", "kwargs"}
)


def is_specific_identifier(name: str) -> bool:
    """A repo-defined name that counts for the specificity metric: not a dunder, builtin or generic word."""
    return len(name) >= 4 and not name.startswith("__") and name not in _COMMON and name.lower() not in _COMMON


def identifier_spans(text: str, identifiers: set[str] | frozenset[str]) -> list[tuple[int, int]]:
    """Character spans (start, end) of the words of `text` that are in `identifiers`, in order."""
    return [m.span() for m in IDENT_RE.finditer(text) if m.group() in identifiers]


def mark_tokens(offsets: list[tuple[int, int]], spans: list[tuple[int, int]], shift: int = 0) -> list[bool]:
    """Per token: does its character span overlap any identifier span? (both sorted by start)"""
    out, j = [], 0
    for s, e in offsets:
        s, e = s + shift, e + shift
        while j < len(spans) and spans[j][1] <= s:
            j += 1
        out.append(j < len(spans) and spans[j][0] < e and e > s)
    return out


def words(text: str) -> set[str]:
    """Every identifier-shaped word of `text` (not the tails of numbers such as `1e5`)."""
    return set(_WORD_RE.findall(text))


def first_identifier(text: str) -> str | None:
    """The first identifier-shaped word of `text`, or None."""
    m = _WORD_RE.search(text)
    return m.group() if m else None


def stable_hash(*parts: Any) -> int:
    """A process-independent 64-bit hash of the parts' str() (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256("\0".join(map(str, parts)).encode()).digest()[:8], "little")


# ---------------------------------------------------------------------- string metrics


def normalise(text: str) -> str:
    """Whitespace-insensitive form used by exact match (runs of whitespace -> one space, ends stripped)."""
    return " ".join(text.split())


def exact_match(pred: str, target: str) -> float:
    """1.0 when prediction and target agree up to whitespace."""
    return float(normalise(pred) == normalise(target))


def levenshtein(a: str, b: str) -> int:
    """Character edit distance (insert / delete / substitute, cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_similarity(pred: str, target: str) -> float:
    """1 - edit distance / max length (RepoBench / CrossCodeEval); 1.0 for two empty strings."""
    p, t = pred.strip(), target.strip()
    if not p and not t:
        return 1.0
    return 1.0 - levenshtein(p, t) / max(len(p), len(t))


# ---------------------------------------------------------------------- identifier sets


def _dotted(name: str | None) -> Iterable[str]:
    return IDENT_RE.findall(name or "")


def repo_identifiers(ctx: RepoContext) -> set[str]:
    """Repository-defined specific names: `ctx.defined_identifiers()` filtered by `is_specific_identifier`."""
    return {n for n in ctx.defined_identifiers() if is_specific_identifier(n)}


def known_identifiers(ctx: RepoContext) -> set[str]:
    """Every name that exists for this repository: what it defines (definitions, qualified-name parts, parameters,
    constants, exports), what it imports (names, aliases, every module-path part), what its files reference
    (`FileFacts.uses`), its own module names, Python builtins, keywords and the public attributes of builtin types.

    An identifier outside this set (and outside the prompt) is *invented*. Works on any object with
    `defined_identifiers()`; the per-file facts are read when it has `files`.
    """
    names: set[str] = set(BUILTIN_NAMES)
    names.update(ctx.defined_identifiers())
    for path, f in (getattr(ctx, "files", None) or {}).items():
        names.update(_dotted(path.rsplit(".", 1)[0]))
        names.update(_dotted(getattr(f, "module", "")))
        for d in f.definitions:
            names.update(_dotted(d.qualname))
            names.update(p.name.lstrip("*") for p in d.params if p.name.lstrip("*"))
        names.update(c.name for c in f.constants)
        names.update(f.exports or ())
        for imp in f.imports:
            names.update(_dotted(imp.module))
            names.update(_dotted(imp.resolved))
            names.update(_dotted(imp.name))
            names.update(_dotted(imp.alias))
        for used in f.uses:
            names.update(_dotted(used))
    names.discard("")
    return names
