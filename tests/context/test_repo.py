"""RepoContext over a small repository: walking, imports, graph, ranking, digest, render, JSON."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ctx_helpers import write_tree

from hypernet.context import RepoContext, extract_repo

SOURCE_FILES = ["app.py", "pkg/__init__.py", "pkg/core.py", "pkg/util.py", "tests/test_core.py"]


def test_walk_skips_with_reasons(sample_repo: Path) -> None:
    ctx = extract_repo(sample_repo, max_file_bytes=4096)
    assert sorted(ctx.files) == SOURCE_FILES
    assert ctx.skipped == {
        ".gitignore": "unsupported",
        "README.md": "unsupported",
        "api_pb2.py": "generated",
        "big.py": "oversized",
        "blob.py": "binary",
        "ignored_dir/": "gitignored",
        "node_modules/": "vendored",
        "outside_dir": "symlink",
        "outside_file.py": "symlink",
        "run.log": "gitignored",
        "secret.py": "gitignored",
    }
    assert ctx.stats["skipped"] == {"binary": 1, "generated": 1, "gitignored": 3, "oversized": 1, "symlink": 2,
                                    "unsupported": 2, "vendored": 1}
    assert ctx.stats["files"] == 5 and ctx.stats["by_language"] == {"python": 5}


def test_import_kinds_and_graph(sample_repo: Path) -> None:
    ctx = extract_repo(sample_repo, max_file_bytes=4096)
    a = ctx.analysis
    assert a.import_kinds["pkg/core.py"] == ["stdlib", "third_party", "internal"]
    assert a.import_kinds["pkg/__init__.py"] == ["internal", "internal"]
    assert ctx.import_graph == {
        "app.py": ["pkg/__init__.py"],
        "pkg/__init__.py": ["pkg/core.py"],
        "pkg/core.py": ["pkg/util.py"],
        "pkg/util.py": [],
        "tests/test_core.py": ["pkg/core.py"],
    }
    assert a.external == {"stdlib": {"os": 1}, "third_party": {"requests": 1}}
    assert a.references["app.py"] == {"Engine": 3, "run": 3}
    assert [(i.module, kind) for i, kind in ctx.imports_of("pkg/core.py")] == [
        ("os", "stdlib"), ("requests", "third_party"), ("pkg.util", "internal")]
    assert ctx.references["tests/test_core.py"] == {"Engine": 2, "start": 1}
    assert a.references["pkg/core.py"] == {"helper": 2}


def test_ranking_and_api(sample_repo: Path) -> None:
    ctx = extract_repo(sample_repo, max_file_bytes=4096)
    ranked = [(r.path, r.definition.qualname) for r in ctx.ranked_definitions()]
    # Engine is used by three other files; helper by one central file; private and test definitions are out.
    assert ranked == [("pkg/core.py", "Engine"), ("pkg/util.py", "helper"), ("pkg/core.py", "run"),
                      ("pkg/core.py", "Engine.start")]
    all_ranked = [r.definition.qualname for r in ctx.ranked_definitions(include_private=True, include_tests=True)]
    assert all_ranked[-2:] == ["_unused", "test_start"]
    assert ctx.api_surface() == {
        "pkg/core.py": ["Engine: class Engine", "Engine.start: def start(self, n: int) -> int",
                        "run: def run(e: Engine) -> int"],
        "pkg/util.py": ["helper: def helper(x: int) -> int"],
    }
    assert ctx.defined_identifiers() == {"Engine", "start", "run", "helper", "_unused", "test_start"}


def test_assertions_and_conventions(sample_repo: Path) -> None:
    ctx = extract_repo(sample_repo, max_file_bytes=4096)
    [a] = ctx.assertions()
    assert (a.file, a.line, a.target) == ("tests/test_core.py", 5, "2")
    assert a.prefix == "def test_start():\n    assert Engine().start(2) == "
    conv = ctx.conventions
    assert conv["test_framework"] == "pytest"
    assert conv["naming"]["functions"] == "snake_case (100%)"
    assert conv["typing"] == {"params_annotated": 1.0, "returns_annotated": 0.6}
    assert conv["formatting"]["indent"] == "4 spaces"
    assert conv["formatting"]["quotes"] == "double"


def test_digest_is_content_only(sample_repo: Path, tmp_path: Path) -> None:
    ctx = extract_repo(sample_repo, max_file_bytes=4096)
    assert len(ctx.digest) == 64
    copy = tmp_path / "copy"
    shutil.copytree(sample_repo, copy, symlinks=True)
    for p in copy.rglob("*.py"):
        if not p.is_symlink():
            os.utime(p, (1, 1))
    assert extract_repo(copy, max_file_bytes=4096).digest == ctx.digest
    (copy / "pkg/util.py").write_text("def helper(x): return x\n")
    assert extract_repo(copy, max_file_bytes=4096).digest != ctx.digest


def test_json_round_trip(sample_repo: Path) -> None:
    ctx = extract_repo(sample_repo, max_file_bytes=4096)
    d = json.loads(json.dumps(ctx.to_json()))
    back = RepoContext.from_json(d)
    assert back == ctx
    assert back.to_json() == ctx.to_json()
    assert back.digest == ctx.digest


def test_render_respects_budget_and_order(sample_repo: Path) -> None:
    ctx = extract_repo(sample_repo, max_file_bytes=4096)
    full = ctx.render(4096)
    assert full.splitlines()[0].startswith("# Repository context ")
    body = full[full.index("pkg/core.py:"):]
    assert body == (
        "pkg/core.py:\n"
        "  class Engine\n"
        "    def start(self, n: int) -> int\n"
        "  def run(e: Engine) -> int\n"
        "pkg/util.py:\n"
        "  def helper(x: int) -> int  # Help.\n"
    )
    words = lambda s: len(s.split())  # a deliberately different counter
    for budget in (5, 40, 60, 80, 120):
        for counter in (None, words):
            text = ctx.render(budget, counter)
            assert (counter or (lambda s: (len(s) + 3) // 4))(text) <= budget
    small = ctx.render(90)
    assert "class Engine" in small or small.count("\n") <= 4
    items = ctx.render_items(3)
    assert items == [
        "file pkg/core.py (python): imports os, pkg.util, requests; defines Engine, run",
        "pkg/core.py: class Engine",
        "file pkg/util.py (python): imports -; defines helper",
    ]


def test_summary(sample_repo: Path) -> None:
    s = extract_repo(sample_repo, max_file_bytes=4096).summary()
    assert s["top_apis"][0] == "pkg/core.py: class Engine"
    assert s["third_party"] == ["requests"] and s["stdlib"] == ["os"]
    assert s["import_edges"] == 4
    assert s["stats"]["assertions"] == 1


def test_empty_repo(tmp_path: Path) -> None:
    ctx = extract_repo(tmp_path)
    assert ctx.files == {} and ctx.skipped == {}
    assert ctx.ranked_definitions() == [] and ctx.render_items() == [] and ctx.assertions() == []
    assert ctx.render(100).startswith("# Repository context")
    assert RepoContext.from_json(ctx.to_json()) == ctx


def test_max_files_truncates_deterministically(tmp_path: Path) -> None:
    write_tree(tmp_path, {f"m{i}.py": f"def f{i}(): pass\n" for i in range(5)})
    ctx = extract_repo(tmp_path, max_files=3)
    assert sorted(ctx.files) == ["m0.py", "m1.py", "m2.py"]
    assert ctx.skipped == {"m3.py": "max_files", "m4.py": "max_files"} and ctx.truncated


def test_nested_gitignore_and_negation(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        ".gitignore": "*.gen.py\n",
        "a/.gitignore": "!keep.gen.py\nlocal/\n",
        "a/keep.gen.py": "X = 1\n",
        "a/drop.gen.py": "X = 1\n",
        "a/local/z.py": "X = 1\n",
        "b/local/z.py": "X = 1\n",
    })
    ctx = extract_repo(tmp_path)
    assert sorted(ctx.files) == ["a/keep.gen.py", "b/local/z.py"]
    assert {k: v for k, v in ctx.skipped.items() if v == "gitignored"} == {"a/drop.gen.py": "gitignored",
                                                                          "a/local/": "gitignored"}


def test_parallel_equals_serial(tmp_path: Path) -> None:
    write_tree(tmp_path, {f"p{i // 50}/m{i}.py": f"from p0.m0 import f0\ndef f{i}(x: int) -> int:\n    return f0(x)\n"
                          for i in range(320)})
    write_tree(tmp_path, {f"p{i}/__init__.py": "" for i in range(7)})
    assert extract_repo(tmp_path, workers=2) == extract_repo(tmp_path, workers=1)
