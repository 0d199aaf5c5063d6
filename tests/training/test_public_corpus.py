"""The public GitHub corpus: manifest, materialisation from git snapshots, the "public" corpus source."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest

from training.data import public
from training.data.corpus import CorpusConfig, build_corpus, build_repo, split_files
from training.data.sources import RepoSource, python_files

from .conftest import TOY, write_toy_repo

SHIPPED = Path(__file__).resolve().parents[2] / "training" / "configs" / "smollm2-135m-contrastive.json"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main",
                           "-c", "commit.gpgsign=false", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(path: Path, files: dict[str, str]) -> str:
    """A git working tree at `path` (so its git dir is path/.git) with one commit of `files`; the commit."""
    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "-q")
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "c")
    return _git(path, "rev-parse", "HEAD")


def toy_files(words: list[str], tmp: Path) -> dict[str, str]:
    root = write_toy_repo(tmp, words)
    return {p: (root / p).read_text() for p in python_files(root, 100_000)}


SMALL = {  # one module plus tests: the common shape of a small public project
    "widget.py": (
        "class GearWidget:\n    def spin_gear(self, gear_teeth):\n        return gear_teeth * 2\n\n"
        "def make_gear(gear_teeth):\n    return GearWidget().spin_gear(gear_teeth)\n\n"
        "def gear_ratio(driver_teeth, driven_teeth):\n    return driven_teeth / driver_teeth\n"
    ),
    "tests/test_widget.py": (
        "from widget import GearWidget, gear_ratio, make_gear\n\n"
        "def test_spin_gear():\n    assert GearWidget().spin_gear(3) == 6\n    assert make_gear(4) == 8\n\n"
        "def test_gear_ratio():\n    assert gear_ratio(10, 20) == 2\n    assert gear_ratio(make_gear(1), 4) == 2\n"
    ),
}


# --- manifest -----------------------------------------------------------------------------------------------


def test_split_counts_are_exact_and_mostly_stable_when_repositories_are_added():
    names = [f"owner{i % 7}/repo{i}" for i in range(200)]
    splits = public.assign_splits(names, n_test=40, n_val=20, seed=0)
    assert [sum(s == k for s in splits.values()) for k in ("test", "val", "train")] == [40, 20, 140]
    assert public.assign_splits(list(reversed(names)), 40, 20, 0) == splits  # order of the input is irrelevant
    grown = public.assign_splits(names + [f"new/repo{i}" for i in range(10)], 40, 20, 0)
    assert [sum(s == k for s in grown.values()) for k in ("test", "val", "train")] == [40, 20, 150]
    moved = sum(grown[n] != splits[n] for n in names)
    assert moved <= 2 * 10  # each added repository shifts each of the two boundaries by at most one
    assert public.assign_splits(names, 40, 20, seed=1) != splits


def test_find_mirror_handles_bare_and_non_bare_snapshots(tmp_path, monkeypatch):
    commit = make_repo(tmp_path / "mirror" / "alice+tool" / "repo", {"a.py": "x = 1\n"})
    subprocess.run(["git", "clone", "-q", "--bare", str(tmp_path / "mirror" / "alice+tool" / "repo"),
                    str(tmp_path / "mirror" / "bob+lib" / "repo")], check=True)
    root = tmp_path / "mirror"
    assert public.find_mirror("alice/tool", root) == root / "alice+tool" / "repo" / ".git"
    assert public.find_mirror("bob/lib", root) == root / "bob+lib" / "repo"
    assert public.find_mirror("carol/none", root) is None
    monkeypatch.setenv("CODE2LORA_MIRROR_DIR", str(root))
    assert public.find_mirror("bob/lib") == root / "bob+lib" / "repo"
    manifest = public.build_manifest(["bob/lib", "alice/tool", "carol/none"], n_test=1, n_val=0)
    assert [e["repo"] for e in manifest["repos"]] == ["alice/tool", "bob/lib"]  # no mirror, no entry
    assert {e["commit"] for e in manifest["repos"]} == {commit}
    assert sorted(e["split"] for e in manifest["repos"]) == ["test", "train"]
    path = public.write_manifest(manifest, tmp_path / "m.json")
    assert public.load_manifest(path) == manifest


def test_cli_manifest_from_mirror_skips_excluded_and_tiny_repositories(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    make_repo(root / "alice+tool" / "repo", {"tool.py": "x = 1\n", "tests/test_tool.py": "def test(): pass\n"})
    make_repo(root / "bob+json" / "repo", {"json/__init__.py": "", "json/x.py": "y = 2\n"})  # shadows the stdlib
    make_repo(root / "carol+one" / "repo", {"one.py": "z = 3\n", "README": "hi\n"})  # a single .py file
    monkeypatch.setenv("CODE2LORA_MIRROR_DIR", str(root))
    out = tmp_path / "manifest.json"
    assert public.main(["manifest", "--from-mirror", "--n-test", "1", "--n-val", "0", "--out", str(out)]) == 0
    manifest = public.load_manifest(out)
    assert [e["repo"] for e in manifest["repos"]] == ["alice/tool"]
    assert manifest["repos"][0]["split"] == "test"


# --- materialize --------------------------------------------------------------------------------------------


def test_materialize_exports_once_and_renames_a_complete_tree(tmp_path, monkeypatch, caplog):
    root = tmp_path / "mirror"
    commit = make_repo(root / "alice+tool" / "repo", {"tool.py": "x = 1\n", "pkg/mod.py": "y = 2\n"})
    manifest = {"format": 1, "seed": 0, "repos": [
        {"repo": "alice/tool", "commit": commit, "split": "test"},
        {"repo": "gone/away", "commit": "0" * 40, "split": "train"},
    ]}
    dest = tmp_path / "public"
    with caplog.at_level(logging.WARNING):
        out = public.materialize(manifest, dest, root, progress=False)
    assert out == [dest / "alice+tool"]
    assert "1 of 2 repositories have no mirror" in caplog.text
    assert (dest / "alice+tool" / "pkg" / "mod.py").read_text() == "y = 2\n"
    assert (dest / "alice+tool" / ".commit").read_text().strip() == commit
    assert not (dest / "alice+tool" / ".git").exists()

    def boom(*a, **k):  # a second run must not export again
        raise AssertionError("exported twice")

    monkeypatch.setattr(public, "_export", boom)
    assert public.materialize(manifest, dest, root, progress=False) == [dest / "alice+tool"]

    # A crash half-way leaves neither a half tree under the real name nor the temporary folder.
    def crash(git_dir, c, into):
        (into / "half.py").write_text("partial\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(public, "_export", crash)
    (dest / "alice+tool" / ".commit").write_text("f" * 40 + "\n")  # pretend it holds another commit
    with pytest.raises(KeyboardInterrupt):
        public.materialize(manifest, dest, root, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == ["alice+tool"]
    assert not (dest / "alice+tool" / "half.py").exists()
    monkeypatch.undo()
    # The stale stamp is replaced by a fresh export of the manifest commit.
    public.materialize(manifest, dest, root, progress=False)
    assert public.is_materialized(dest / "alice+tool", commit)


def test_materialize_falls_back_when_the_snapshot_lacks_a_blob(tmp_path):
    root = tmp_path / "mirror"
    work = root / "alice+tool" / "repo"
    commit = make_repo(work, {"tool.py": "x = 1\n", "tests/test_tool.py": "def test(): pass\n",
                              "media/big.bin": "large file left out of the snapshot\n"})
    blob = _git(work, "rev-parse", f"{commit}:media/big.bin")
    (work / ".git" / "objects" / blob[:2] / blob[2:]).unlink()  # as the snapshot store drops files >= 4 MiB
    dest = tmp_path / "public"
    manifest = {"format": 1, "seed": 0, "repos": [{"repo": "alice/tool", "commit": commit, "split": "train"}]}
    assert public.materialize(manifest, dest, root, progress=False) == [dest / "alice+tool"]
    folder = dest / "alice+tool"
    assert (folder / "tests" / "test_tool.py").read_text() == "def test(): pass\n"
    assert not (folder / "media" / "big.bin").exists()
    assert (folder / ".missing").read_text() == "media/big.bin\n"
    assert public.is_materialized(folder, commit)


# --- corpus -------------------------------------------------------------------------------------------------


def _public_fixture(tmp_path: Path, entries: dict[str, tuple[dict[str, str], str]]) -> tuple[Path, Path]:
    """Mirrors + manifest + materialised folders for {owner/name: (files, split)}; (manifest path, dest)."""
    root, dest = tmp_path / "mirror", tmp_path / "public"
    repos = []
    for repo, (files, split) in entries.items():
        commit = make_repo(root / public.folder_name(repo) / "repo", files)
        repos.append({"repo": repo, "commit": commit, "split": split})
    manifest = {"format": 1, "seed": 0, "repos": repos}
    path = public.write_manifest(manifest, tmp_path / "manifest.json")
    public.materialize(manifest, dest, root, progress=False)
    return path, dest


def test_public_source_uses_manifest_splits_and_keeps_held_out_repositories(tmp_path, tokenizer):
    words = list(TOY.values())
    files = [toy_files(w, tmp_path / f"toy{i}") for i, w in enumerate(words)]
    manifest, dest = _public_fixture(tmp_path, {
        "alice/inventory": (files[0], "test"), "bob/astronomy": (files[1], "val"),
        "carol/brewing": (files[2], "train"),
    })
    # A training repository (a git path) holding the test repository's files: the training copy must go.
    copy = write_toy_repo(tmp_path / "vendored_copy", words[0])
    rails = write_toy_repo(tmp_path / "railways", words[3])
    base = dict(seq_len=48, chunks_per_repo=2, eval_chunks_per_repo=3, target_frac=0.4, n_test=1, n_val=1,
                git_paths=[str(copy), str(rails)], public_manifest=str(manifest), public_dir=str(dest))
    corpus = build_corpus(CorpusConfig(**base, sources=["git", "public"]), tokenizer, progress=False)
    by_name = {r.name: r for r in corpus}
    assert {n: r.split for n, r in by_name.items()} == {
        "gh/alice/inventory": "test", "gh/bob/astronomy": "val", "gh/carol/brewing": "train", "git/railways": "train"}
    assert all(by_name[n].origin == "github" for n in by_name if n.startswith("gh/"))
    assert len(by_name["gh/alice/inventory"].chunks) == 3 and len(by_name["gh/carol/brewing"].chunks) == 2

    # Without the public source the old hash split decides, and the copy is a repository again.
    old = build_corpus(CorpusConfig(**base, sources=["git"]), tokenizer, progress=False)
    assert sorted(r.name for r in old) == ["git/railways", "git/vendored_copy"]
    assert sorted(r.split for r in old) == ["test", "val"]
    # splits_from_manifest=False: one hash split over everything, manifest splits ignored.
    mixed = build_corpus(CorpusConfig(**base, sources=["git", "public"], splits_from_manifest=False), tokenizer,
                         progress=False)
    assert sorted(r.split for r in mixed).count("test") == 1 and len(mixed) >= 4


def test_a_one_module_plus_tests_repository_yields_context_targets_and_a_chunk(tmp_path, tokenizer):
    cfg = CorpusConfig(seq_len=48, target_frac=1.0)  # every non-test file hashed into the targets
    root = tmp_path / "small"
    make_repo(root, SMALL)
    files = {p: (root / p).read_bytes() for p in python_files(root, 100_000)}
    repo = build_repo(RepoSource("gh/alice/small", str(root), "github", "test"), files, tokenizer, cfg)
    assert repo is not None
    assert repo.context_files == ["widget.py"] and repo.target_files == ["tests/test_widget.py"]
    # Packaging and docs scaffolding never takes the module's place as the context, whatever the hash says.
    for frac in (0.0, 0.5, 1.0):
        context, targets = split_files("gh/alice/small", ["docs/conf.py", "setup.py", "tests.py", "widget.py"],
                                       CorpusConfig(target_frac=frac), keep_context=True)
        assert context == ["widget.py"] and targets == ["docs/conf.py", "setup.py", "tests.py"]
        # ... nor does a package's __init__.py (often only re-exports) stand alone as the context.
        context, _ = split_files("gh/alice/pkg", ["pkg/__init__.py", "pkg/core.py", "tests/test_core.py"],
                                 CorpusConfig(target_frac=frac), keep_context=True)
        assert "pkg/core.py" in context
    assert repo.chunks and sum(c.n_ident() for c in repo.chunks) >= 3
    assert {"GearWidget", "gear_ratio", "make_gear"} <= set(repo.identifiers)
    # Other origins keep today's bars: the same files are too small for them.
    assert build_repo(RepoSource("git/small", str(root), "git"), files, tokenizer, cfg) is None

    manifest, dest = _public_fixture(tmp_path / "p", {"alice/small": (SMALL, "test")})
    corpus = build_corpus(CorpusConfig(seq_len=48, sources=["public"], public_manifest=str(manifest),
                                       public_dir=str(dest)), tokenizer, progress=False)
    assert [(r.name, r.split, r.context_files) for r in corpus] == [("gh/alice/small", "test", ["widget.py"])]


def test_cache_key_unchanged_for_configs_without_the_public_source(tmp_path):
    shipped = CorpusConfig(**json.loads(SHIPPED.read_text())["corpus"])
    assert shipped.key() == "6969b3ef5a19d9c7"  # computed before the public source existed
    assert CorpusConfig().key() == "8a3b88946b790a18"
    assert CorpusConfig(small_repo_min_files=3).key() != CorpusConfig().key()
    manifest = tmp_path / "m.json"
    manifest.write_text('{"format": 1, "seed": 0, "repos": []}\n')
    cfg = CorpusConfig(sources=["public"], public_manifest=str(manifest))
    before = cfg.key()
    manifest.write_text('{"format": 1, "seed": 1, "repos": []}\n')
    assert cfg.key() != before  # a new manifest is a new corpus


def test_committed_manifest_is_well_formed():
    manifest = public.load_manifest()
    names = [e["repo"] for e in manifest["repos"]]
    assert len(names) == len(set(names)) >= 300
    counts = {s: sum(e["split"] == s for e in manifest["repos"]) for s in public.SPLITS}
    assert counts["test"] == 40 and counts["val"] == 20


def test_the_corpus_cache_is_rebuilt_when_more_repositories_are_materialised(tmp_path, tokenizer):
    """A corpus cached while only part of the manifest was on disk must not hide the rest later."""
    words = list(TOY.values())
    files = [toy_files(w, tmp_path / f"toy{i}") for i, w in enumerate(words[:2])]
    manifest, dest = _public_fixture(tmp_path, {"alice/inventory": (files[0], "test"),
                                                "bob/astronomy": (files[1], "val")})
    cfg = CorpusConfig(seq_len=48, sources=["public"], public_manifest=str(manifest), public_dir=str(dest),
                       n_test=1, n_val=1)
    moved = tmp_path / "astronomy-later"
    (dest / "bob+astronomy").rename(moved)  # only the test repository is materialised at first
    first = build_corpus(cfg, tokenizer, cache_dir=tmp_path / "cache", progress=False)
    assert [r.name for r in first] == ["gh/alice/inventory"]
    moved.rename(dest / "bob+astronomy")
    again = build_corpus(cfg, tokenizer, cache_dir=tmp_path / "cache", progress=False)
    assert sorted(r.name for r in again) == ["gh/alice/inventory", "gh/bob/astronomy"]
    # unchanged disk: the cache answers (same objects' content)
    assert [r.to_json() for r in build_corpus(cfg, tokenizer, cache_dir=tmp_path / "cache", progress=False)] == \
        [r.to_json() for r in again]
