"""Small text helpers shared by the extractors."""

from __future__ import annotations

from bisect import bisect_right

_TEST_DIRS = {"test", "tests", "testing", "__tests__", "spec", "specs"}


def decode(b: bytes | None) -> str:
    """UTF-8 decode that never fails (bad bytes become U+FFFD)."""
    return b.decode("utf-8", "replace") if b else ""


def one_line(b: bytes | str | None) -> str:
    """Collapse all whitespace runs to single spaces (signatures spanning lines)."""
    if b is None:
        return ""
    s = decode(b) if isinstance(b, bytes) else b
    return " ".join(s.split())


def clip(s: str, n: int) -> str:
    """Truncate to n characters with an ellipsis."""
    return s if len(s) <= n else s[: n - 1] + "…"


def first_line(doc: str | None) -> str:
    """First non-empty line of a docstring/comment, stripped and clipped."""
    if not doc:
        return ""
    for line in doc.splitlines():
        line = line.strip()
        if line:
            return clip(line, 160)
    return ""


def docstring_style(doc: str | None) -> str:
    """google | numpy | sphinx | plain | none."""
    if not doc:
        return "none"
    if ":param" in doc or ":return" in doc or ":rtype" in doc:
        return "sphinx"
    if "----------" in doc and ("Parameters" in doc or "Returns" in doc):
        return "numpy"
    if "Args:" in doc or "Returns:" in doc or "Raises:" in doc or "Yields:" in doc:
        return "google"
    return "plain"


def is_test_path(path: str) -> bool:
    """True for test files by the usual naming conventions of all supported languages."""
    parts = path.split("/")
    name = parts[-1]
    stem = name.rsplit(".", 1)[0]
    if any(p in _TEST_DIRS for p in parts[:-1]):
        return True
    return (
        stem.startswith("test_")
        or stem.endswith("_test")
        or stem.endswith(".test")
        or stem.endswith(".spec")
        or (name.endswith(".java") and stem.endswith("Test"))
        or stem == "conftest"
    )


def line_style(src: bytes, conv: dict[str, int]) -> None:
    """Add formatting counters (indentation unit, long lines, max line length) to `conv`."""
    lines = src.split(b"\n")
    lens = sorted(map(len, lines))
    conv["max_line"] = lens[-1] if lens else 0
    for limit in (79, 88, 100, 120):
        conv[f"line_over_{limit}"] = len(lens) - bisect_right(lens, limit)
    # Indentation is a style signal, not a count: the first lines of each file are a fair sample.
    head = lines[:200]
    conv["indent_tab"] = sum(1 for x in head if x[:1] == b"\t")
    ind = [len(x) - len(x.lstrip(b" ")) for x in head if x[:1] == b" "]
    conv["indent_4"] = sum(1 for i in ind if i % 4 == 0)
    conv["indent_2"] = sum(1 for i in ind if i % 4 == 2)


def naming_style(name: str) -> str:
    """Naming style of an identifier: snake, camel, pascal, upper or '' when ambiguous (one lowercase word)."""
    if not name or not name[0].isalpha():
        return ""
    has_us = "_" in name
    if name.isupper():
        return "upper"
    if name.islower():
        return "snake" if has_us else ""
    if name[0].isupper():
        return "pascal" if not has_us else "mixed"
    return "camel" if not has_us else "mixed"
