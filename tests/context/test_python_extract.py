"""Exact facts extracted from small Python sources."""

from __future__ import annotations

from hypernet.context import Constant, Import, Param, extract_bytes

SRC = b'''"""Module doc."""
from __future__ import annotations
import os.path as osp, sys
from .core import (Engine as E, run)
from .. import helpers
from typing import *
import numpy as np

MAX_SIZE: int = 10
DEFAULT_NAME = "x"
_PRIVATE_LIMIT = 3
lower_case = 1
__all__ = ["Widget", "make"]


@dataclass(frozen=True)
class Widget(Base, Generic[T], metaclass=Meta):
    """A widget.

    Args:
        size: the size.
    """

    def __init__(self, size: int = MAX_SIZE, *args: str, name: "str | None" = None, **kw) -> None:
        self.size = helper(size)

    @property
    async def area(self, /, scale, *, exact: bool) -> float:
        return np.sqrt(self.size)

    class Inner:
        def deep(self): ...

    def _hidden(self):
        def local():  # nested helpers are not API
            pass


def make(n, k=2):
    """Make one."""
    return Widget(n)


class _Private:
    def method(self):
        pass
'''


def test_imports_exact() -> None:
    f = extract_bytes("pkg/sub/mod.py", SRC)
    assert f.imports == [
        Import("__future__", "annotations", None, 0, 2, "__future__"),
        Import("os.path", None, "osp", 0, 3, "os.path"),
        Import("sys", None, None, 0, 3, "sys"),
        Import("core", "Engine", "E", 1, 4, "pkg.sub.core"),
        Import("core", "run", None, 1, 4, "pkg.sub.core"),
        Import("", "helpers", None, 2, 5, "pkg"),
        Import("typing", "*", None, 0, 6, "typing"),
        Import("numpy", None, "np", 0, 7, "numpy"),
    ]


def test_definitions_signatures_exact() -> None:
    f = extract_bytes("pkg/sub/mod.py", SRC)
    got = [(d.qualname, d.kind, d.line, d.signature, d.exported) for d in f.definitions]
    assert got == [
        ("Widget", "class", 17, "class Widget(Base, Generic[T], metaclass=Meta)", True),
        ("Widget.__init__", "method", 24,
         'def __init__(self, size: int = MAX_SIZE, *args: str, name: "str | None" = None, **kw) -> None', True),
        ("Widget.area", "method", 28, "async def area(self, /, scale, *, exact: bool) -> float", True),
        ("Widget.Inner", "class", 31, "class Inner", True),
        ("Widget.Inner.deep", "method", 32, "def deep(self)", True),
        ("Widget._hidden", "method", 34, "def _hidden(self)", False),
        ("make", "function", 39, "def make(n, k=2)", True),
        ("_Private", "class", 44, "class _Private", False),
        ("_Private.method", "method", 45, "def method(self)", False),
    ]
    widget, init, area = f.definitions[0], f.definitions[1], f.definitions[2]
    assert widget.bases == ["Base", "Generic[T]"]
    assert widget.decorators == ["dataclass(frozen=True)"]
    assert widget.doc == "A widget."
    assert init.params == [
        Param("self"),
        Param("size", "int", "MAX_SIZE"),
        Param("*args", "str"),
        Param("name", '"str | None"', "None"),
        Param("**kw"),
    ]
    assert init.returns == "None"
    assert area.decorators == ["property"] and area.is_async
    assert [p.name for p in area.params] == ["self", "/", "scale", "*", "exact"]
    assert f.definitions[6].doc == "Make one."


def test_constants_exports_uses() -> None:
    f = extract_bytes("pkg/sub/mod.py", SRC)
    assert f.constants == [
        Constant("MAX_SIZE", 9, "int", "10"),
        Constant("DEFAULT_NAME", 10, None, '"x"'),
        Constant("_PRIVATE_LIMIT", 11, None, "3"),
    ]
    assert f.exports == ["Widget", "make"]
    assert f.uses["Widget"] == 1 and f.uses["helper"] == 1 and f.uses["sqrt"] == 1
    assert f.uses["Engine"] == 1 and f.uses["Base"] == 1 and f.uses["dataclass"] == 1
    assert f.module == "pkg.sub.mod" and not f.is_test and f.errors == 0
    assert (f.conv["doc_google"], f.conv["doc_plain"], f.conv["doc_none"]) == (1, 1, 7)
    assert (f.conv["funcs"], f.conv["classes"], f.conv["params"], f.conv["params_typed"]) == (6, 3, 8, 4)


TEST_SRC = b'''import unittest
import pytest
from pkg.mod import make


def test_make():
    w = make(3)
    assert w.size == 3
    assert w.ok()


class TestWidget(unittest.TestCase):
    def test_size(self):
        self.assertEqual(make(2).size, 2)
        self.assertTrue(make(1).size)
        self.assertIn(1, [1], msg="x")
'''


def test_assertions_prefix_and_target() -> None:
    f = extract_bytes("tests/test_mod.py", TEST_SRC)
    assert f.is_test
    got = [(a.line, a.kind, a.target) for a in f.assertions]
    assert got == [(8, "assert", "3"), (9, "assert", "w.ok()"), (14, "assertEqual", "2"),
                   (15, "assertTrue", "make(1).size"), (16, "assertIn", "[1]")]
    first = f.assertions[0]
    assert first.prefix == "def test_make():\n    w = make(3)\n    assert w.size == "
    assert f.assertions[2].prefix.endswith("def test_size(self):\n        self.assertEqual(make(2).size, ")
    assert f.assertions[2].prefix.startswith("    def test_size")
    # prefix + target is a literal slice of the source.
    for a in f.assertions:
        assert (a.prefix + a.target).encode() in TEST_SRC


def test_assertions_only_in_test_files() -> None:
    f = extract_bytes("pkg/mod.py", b"def f(x):\n    assert x == 1\n")
    assert f.assertions == []


def test_syntax_errors_keep_what_parses() -> None:
    src = b"import os\n\ndef good(a: int) -> int:\n    return a\n\ndef broken(:\n    pass\n\nclass Later:\n    def m(self): pass\n"
    f = extract_bytes("m.py", src)
    assert f.errors >= 1
    names = [d.qualname for d in f.definitions]
    assert "good" in names and "Later" in names and "Later.m" in names
    assert f.imports == [Import("os", None, None, 0, 1, "os")]


def test_non_utf8_and_binary() -> None:
    f = extract_bytes("latin.py", b"# caf\xe9\ndef caf\xc3\xa9(): return '\xff'\n")
    assert [d.name for d in f.definitions] == ["café"]
    assert extract_bytes("blob.py", b"\x00\x01\x02def f(): pass") == "binary"
    assert extract_bytes("gen.py", b"# Code generated by protoc. DO NOT EDIT.\nX = 1\n") == "generated"


def test_empty_file() -> None:
    f = extract_bytes("empty.py", b"")
    assert (f.definitions, f.imports, f.lines, f.size) == ([], [], 0, 0)
