"""Incremental update == full re-extraction, on hand-written cases and random edit sequences."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import git
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypernet.context import FileChange, changes_between, extract_repo, update_context

MAX_BYTES = 2000

PATHS = [
    "a.py", "pkg/__init__.py", "pkg/b.py", "pkg/sub/c.py", "tests/test_a.py", "d.go", "e.ts", "f.js",
    "vendor/v.py", "build/gen.py", "ignored/x.py", "notes.md", "bin.py", "big.py", "link.py",
    ".gitignore", "pkg/.gitignore", "src/lib.rs", "src/Main.java",
]
CONTENTS = [
    "def f0(x: int) -> int:\n    return x\n",
    "from pkg.b import f1\n\ndef f0(y):\n    return f1(y) + f1(2)\n",
    "from .b import f1\nfrom a import f0\n\nclass K(Base):\n    def f1(self):\n        return f0(1)\n",
    "import os\nMAX = 3\n\ndef f1(a, b=2):\n    return os.path.join(a, b)\n",
    "def broken(:\n    pass\n\ndef f2(): return f0()\n",
    "def test_x():\n    assert f0(1) == 1\n",
    "package main\nfunc F0(a int) int { return F1(a) }\n",
    "export function f1(a: number): number { return f0(a); }\n",
    "pub fn f0(a: i32) -> i32 { f1(a) }\n",
    "public class Main { public int f1(int a) { return f0(a); } }\n",
]
IGNORES = ["ignored/\n", "*.md\n", "sub/\n", "", "!keep.py\n*.py\n", "b.py\n"]


def _apply(root: Path, op: tuple[str, int, int, int]) -> None:
    kind, i, j, c = op
    path = root / PATHS[i % len(PATHS)]
    if kind == "write":
        name = path.name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if name == "link.py":
            os.symlink("/etc/hostname" if c % 2 else "a.py", path)
        elif name == ".gitignore":
            path.write_text(IGNORES[c % len(IGNORES)])
        elif name == "bin.py":
            path.write_bytes(b"\0\1" + bytes([c]))
        elif name == "big.py":
            path.write_text("X = 1\n" * (MAX_BYTES // 5 + c))
        else:
            path.write_text(CONTENTS[c % len(CONTENTS)] + f"# v{c}\n")
    elif kind == "delete":
        if path.is_symlink() or path.is_file():
            path.unlink()
    elif kind == "rename":
        dst = root / PATHS[j % len(PATHS)]
        if (path.is_file() or path.is_symlink()) and not dst.exists() and not dst.is_symlink():
            dst.parent.mkdir(parents=True, exist_ok=True)
            path.rename(dst)


def _commit(repo: git.Repo) -> str:
    repo.git.add("-A")
    repo.git.commit("-q", "--allow-empty", "-m", "step")
    repo.git.clean("-ffdxq")  # the working tree must be exactly the commit (as in a fresh checkout)
    return repo.head.commit.hexsha


def _init(root: Path) -> git.Repo:
    repo = git.Repo.init(root)
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "t")
        cw.set_value("user", "email", "t@example.com")
        cw.set_value("commit", "gpgsign", "false")
    return repo


def _assert_same(inc, full) -> None:
    assert inc == full
    assert inc.digest == full.digest
    assert inc.to_json() == full.to_json()


OPS = st.tuples(st.sampled_from(["write", "write", "write", "delete", "rename"]), st.integers(0, 100),
                st.integers(0, 100), st.integers(0, 20))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(OPS, min_size=1, max_size=4), min_size=1, max_size=4))
def test_incremental_equals_full_on_random_edits(commits: list[list[tuple[str, int, int, int]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = _init(root)
        (root / "a.py").write_text(CONTENTS[0])
        sha = _commit(repo)
        ctx = extract_repo(root, max_file_bytes=MAX_BYTES)
        for ops in commits:
            for op in ops:
                _apply(root, op)
            new_sha = _commit(repo)
            changes = changes_between(root, sha, new_sha)
            inc = update_context(ctx, root, changes)
            full = extract_repo(root, max_file_bytes=MAX_BYTES)
            _assert_same(inc, full)
            ctx, sha = inc, new_sha


def test_changes_between_reports_all_kinds(tmp_path: Path) -> None:
    repo = _init(tmp_path)
    (tmp_path / "keep.py").write_text("def keep():\n    return 1\n")
    (tmp_path / "mod.py").write_text("X = 1\n")
    (tmp_path / "gone.py").write_text("Y = 1\n")
    (tmp_path / "old_name.py").write_text("def stable_function_with_a_long_body():\n    return 42\n" * 5)
    a = _commit(repo)
    (tmp_path / "mod.py").write_text("X = 2\n")
    (tmp_path / "gone.py").unlink()
    (tmp_path / "old_name.py").rename(tmp_path / "new_name.py")
    (tmp_path / "added.py").write_text("Z = 1\n")
    b = _commit(repo)
    assert changes_between(tmp_path, a, b) == [
        FileChange("A", "added.py"),
        FileChange("D", "gone.py"),
        FileChange("M", "mod.py"),
        FileChange("R", "new_name.py", "old_name.py"),
    ]


def test_incremental_one_file_change_touches_only_that_file(tmp_path: Path) -> None:
    repo = _init(tmp_path)
    for i in range(20):
        (tmp_path / f"m{i}.py").write_text(f"def f{i}():\n    return f{(i + 1) % 20}()\n")
    a = _commit(repo)
    ctx = extract_repo(tmp_path)
    (tmp_path / "m3.py").write_text("def f3(x: int) -> int:\n    return f4() + x\n")
    b = _commit(repo)
    inc = update_context(ctx, tmp_path, changes_between(tmp_path, a, b))
    _assert_same(inc, extract_repo(tmp_path))
    assert inc.digest != ctx.digest
    # Unchanged files keep the very same fact objects: nothing else was re-read.
    assert all(inc.files[p] is ctx.files[p] for p in inc.files if p != "m3.py")
    assert inc.files["m3.py"].definitions[0].signature == "def f3(x: int) -> int"


def test_skipped_dir_appears_and_vanishes(tmp_path: Path) -> None:
    repo = _init(tmp_path)
    (tmp_path / "a.py").write_text("A = 1\n")
    a = _commit(repo)
    ctx = extract_repo(tmp_path)
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "x.js").write_text("export const X = 1;\n")
    b = _commit(repo)
    ctx_b = update_context(ctx, tmp_path, changes_between(tmp_path, a, b))
    assert ctx_b.skipped == {"node_modules/": "vendored"}
    _assert_same(ctx_b, extract_repo(tmp_path))
    (tmp_path / "node_modules" / "x.js").unlink()
    c = _commit(repo)
    ctx_c = update_context(ctx_b, tmp_path, changes_between(tmp_path, b, c))
    assert ctx_c.skipped == {}
    _assert_same(ctx_c, extract_repo(tmp_path))
