"""JavaScript/TypeScript, Go, Rust and Java: same RepoContext shape (definitions, imports, signatures)."""

from __future__ import annotations

from pathlib import Path

from ctx_helpers import write_tree

from hypernet.context import Constant, Import, Param, extract_bytes, extract_repo

TS = b"""import { A, B as C } from './a';
import * as path from 'path';
import Def from "react";
/** A shape. */
export interface Shape { area(): number; }
export type Id = string | number;
export enum Color { Red }
export class Sq extends Base implements Shape {
  private s: number;
  /** Area of it. */
  area(): number { return sq(this.s); }
}
export function sq(n: number, m?: string): number { return n * n; }
export const f = async (a: number): Promise<string> => String(a);
const MAX_N = 10;
function local() { const inner = () => 1; return inner(); }
"""

GO = b"""package main

import (
\t"fmt"
\tm "github.com/x/y/pkg"
)

// Add adds two ints.
func Add(a int, b int) (int, error) { return fmt.Sprintf(a), nil }

type Point struct { X int }
type Shape interface { Area() float64 }

func (p *Point) Move(dx int) { m.Do() }

const MaxN = 3
"""

RUST = b"""use std::collections::HashMap;
use crate::a::{b, c as d};
/// Adds numbers.
pub fn add(a: i32, b: i32) -> i32 { helper(a) }
pub struct Point { x: i32 }
pub trait T { fn t(&self) -> i32; }
impl Point { pub fn new(x: i32) -> Self { Point { x } } fn private(&self) {} }
pub const MAX: i32 = 3;
"""

JAVA = b"""package com.x;
import java.util.List;
import com.x.util.*;
/** A thing. */
public class Foo extends Bar implements Baz {
  public static final int MAX = 3;
  private int count;
  public Foo(int x) { super(x); }
  /** Does it. */
  public List<String> doIt(int a, String b) throws IOException { return helper(a); }
  private void p() {}
}
"""


def _defs(f):
    return [(d.qualname, d.kind, d.line, d.signature, d.exported, d.doc) for d in f.definitions]


def test_typescript() -> None:
    f = extract_bytes("web/app.ts", TS)
    assert f.language == "typescript" and f.errors == 0
    assert f.imports == [
        Import("./a", "A", None, 0, 1, "./a"),
        Import("./a", "B", "C", 0, 1, "./a"),
        Import("path", "*", "path", 0, 2, "path"),
        Import("react", "default", "Def", 0, 3, "react"),
    ]
    assert _defs(f) == [
        ("Shape", "interface", 5, "interface Shape", True, "A shape."),
        ("Shape.area", "method", 5, "area(): number", True, ""),
        ("Id", "type", 6, "type Id = string | number", True, ""),
        ("Color", "enum", 7, "enum Color", True, ""),
        ("Sq", "class", 8, "class Sq extends Base implements Shape", True, ""),
        ("Sq.area", "method", 11, "area(): number", True, "Area of it."),
        ("sq", "function", 13, "function sq(n: number, m?: string): number", True, ""),
        ("f", "function", 14, "f = async (a: number): Promise<string> =>", True, ""),
        ("local", "function", 16, "function local()", False, ""),
    ]
    sq = f.definitions[6]
    assert sq.params == [Param("n", "number"), Param("m", "string")] and sq.returns == "number"
    assert f.definitions[4].bases == ["Base", "Shape"]
    assert f.definitions[7].is_async
    assert f.constants == [Constant("MAX_N", 15, None, "10")]


def test_javascript_require_and_default_export() -> None:
    f = extract_bytes("lib/util.js", b"const fs = require('fs');\n// Adds two numbers.\n"
                      b"export default function add(a, b = 1) { return helper(a) + b; }\n")
    assert f.imports == [Import("fs", None, None, 0, 1, "fs")]
    assert _defs(f) == [("add", "function", 3, "function add(a, b = 1)", True, "Adds two numbers.")]
    assert f.definitions[0].params == [Param("a"), Param("b", None, "1")]


def test_go() -> None:
    f = extract_bytes("cmd/main.go", GO)
    assert f.imports == [
        Import("fmt", None, None, 0, 4, "fmt"),
        Import("github.com/x/y/pkg", None, "m", 0, 5, "github.com/x/y/pkg"),
    ]
    assert _defs(f) == [
        ("Add", "function", 9, "func Add(a int, b int) (int, error)", True, "Add adds two ints."),
        ("Point", "struct", 11, "type Point struct", True, ""),
        ("Shape", "interface", 12, "type Shape interface", True, ""),
        ("Point.Move", "method", 14, "func (p *Point) Move(dx int)", True, ""),
    ]
    assert f.definitions[0].returns == "(int, error)"
    assert f.constants == [Constant("MaxN", 16, None, "3")]
    assert f.uses["Sprintf"] == 1 and f.uses["Do"] == 1


def test_rust() -> None:
    f = extract_bytes("src/lib.rs", RUST)
    assert f.imports == [
        Import("std::collections", "HashMap", None, 0, 1, "std::collections"),
        Import("crate::a", "b", None, 0, 2, "crate::a"),
        Import("crate::a", "c", "d", 0, 2, "crate::a"),
    ]
    assert _defs(f) == [
        ("add", "function", 4, "pub fn add(a: i32, b: i32) -> i32", True, "Adds numbers."),
        ("Point", "struct", 5, "pub struct Point", True, ""),
        ("T", "trait", 6, "pub trait T", True, ""),
        ("T.t", "method", 6, "fn t(&self) -> i32", True, ""),
        ("Point.new", "method", 7, "pub fn new(x: i32) -> Self", True, ""),
        ("Point.private", "method", 7, "fn private(&self)", False, ""),
    ]
    assert f.constants == [Constant("MAX", 8, "i32", "3")]


def test_java() -> None:
    f = extract_bytes("src/main/java/com/x/Foo.java", JAVA)
    assert f.imports == [
        Import("java.util", "List", None, 0, 2, "java.util"),
        Import("com.x.util", "*", None, 0, 3, "com.x.util"),
    ]
    assert _defs(f) == [
        ("Foo", "class", 5, "public class Foo extends Bar implements Baz", True, "A thing."),
        ("Foo.Foo", "constructor", 8, "public Foo(int x)", True, ""),
        ("Foo.doIt", "method", 10, "public List<String> doIt(int a, String b) throws IOException", True, "Does it."),
        ("Foo.p", "method", 11, "private void p()", False, ""),
    ]
    assert f.definitions[2].params == [Param("a", "int"), Param("b", "String")]
    assert f.definitions[2].returns == "List<String>"
    assert f.constants == [Constant("MAX", 6, "int", "3")]  # `private int count` is not a constant


def test_mixed_repo_import_kinds_and_graph(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "web/a.ts": "export function helperFn(x: number): number { return x; }\n",
        "web/app.ts": "import { helperFn } from './a';\nimport fs from 'fs';\nimport lodash from 'lodash';\n"
                      "export const run = () => helperFn(1);\n",
        "go/go.mod": "module github.com/me/proj\n\ngo 1.22\n",
        "go/pkg/util.go": "package pkg\nfunc Do() {}\n",
        "go/main.go": 'package main\nimport (\n\t"fmt"\n\t"github.com/me/proj/pkg"\n\t"github.com/other/lib"\n)\n'
                      "func main() { pkg.Do(); fmt.Println() }\n",
        "rs/src/a.rs": "pub fn b() {}\n",
        "rs/src/lib.rs": "use crate::a::b;\nuse std::fmt;\nuse serde::Serialize;\npub fn go() { b() }\n",
        "java/com/x/util/Tool.java": "package com.x.util;\npublic class Tool { public static void use() {} }\n",
        "java/com/x/Main.java": "package com.x;\nimport com.x.util.Tool;\nimport java.util.List;\n"
                                "import org.apache.Lib;\npublic class Main { void m() { Tool.use(); } }\n",
    })
    ctx = extract_repo(tmp_path)
    a = ctx.analysis
    assert a.import_kinds["web/app.ts"] == ["internal", "stdlib", "third_party"]
    assert a.import_kinds["go/main.go"] == ["stdlib", "internal", "third_party"]
    assert a.import_kinds["rs/src/lib.rs"] == ["internal", "stdlib", "third_party"]
    assert a.import_kinds["java/com/x/Main.java"] == ["internal", "stdlib", "third_party"]
    assert ctx.import_graph["web/app.ts"] == ["web/a.ts"]
    assert ctx.import_graph["go/main.go"] == ["go/pkg/util.go"]
    assert ctx.import_graph["rs/src/lib.rs"] == ["rs/src/a.rs"]
    assert ctx.import_graph["java/com/x/Main.java"] == ["java/com/x/util/Tool.java"]
    assert ctx.stats["by_language"] == {"go": 2, "gomod": 1, "java": 2, "rust": 2, "typescript": 2}
    top = [r.definition.qualname for r in ctx.ranked_definitions()[:5]]
    assert set(top) == {"helperFn", "Do", "b", "Tool", "Tool.use"}
