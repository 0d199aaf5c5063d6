"""Corpus builder: repository split, file split, identifier marking, task construction."""

from __future__ import annotations

from training.data.corpus import (
    CorpusConfig,
    _mark,
    is_specific_identifier,
    split_files,
    split_repos,
)
from training.data.sources import python_files, stable_hash


def test_repository_split_is_deterministic_disjoint_and_sized():
    names = [f"pypi/pkg{i}" for i in range(30)]
    a = split_repos(names, n_test=5, n_val=3, seed=0)
    assert a == split_repos(list(reversed(names)), n_test=5, n_val=3, seed=0)  # order does not matter
    assert sum(v == "test" for v in a.values()) == 5 and sum(v == "val" for v in a.values()) == 3
    b = split_repos(names, n_test=5, n_val=3, seed=1)
    assert a != b  # the seed changes the draw
    # adding a repository never moves an existing one between test and train
    c = split_repos(names + ["pypi/new"], n_test=5, n_val=3, seed=0)
    moved = [n for n in names if (a[n] == "train") != (c[n] == "train") and c[n] != "val" and a[n] != "val"]
    assert len(moved) <= 1


def test_file_split_keeps_tests_as_targets_and_both_sides_non_empty():
    files = ["a.py", "b.py", "c.py", "d.py", "tests/test_a.py", "pkg/test_b.py"]
    context, targets = split_files("repo", files, CorpusConfig(target_frac=0.0))
    assert "tests/test_a.py" in targets and "pkg/test_b.py" in targets
    assert context and [t for t in targets if "test" not in t]  # one non-test file moved to the targets
    assert not set(context) & set(targets) and sorted(context + targets) == sorted(files)


def test_identifier_marking_by_character_overlap():
    # tokens: "x = ", "parse_", "invoice", "(", "y", ")"  with identifier span "parse_invoice" = [4, 17)
    offsets = [(0, 4), (4, 10), (10, 17), (17, 18), (18, 19), (19, 20)]
    assert _mark(offsets, [(4, 17)]) == [False, True, True, False, False, False]
    assert _mark(offsets, []) == [False] * 6


def test_specific_identifiers_exclude_builtins_and_generic_names():
    assert is_specific_identifier("parse_invoice")
    assert is_specific_identifier("InvoiceLine")
    for name in ("self", "get", "items", "append", "__init__", "len", "value", "abc"):
        assert not is_specific_identifier(name)


def test_python_files_skip_vendored_copies(tmp_path):
    (tmp_path / "_vendor" / "six").mkdir(parents=True)
    (tmp_path / "_vendor" / "six" / "six.py").write_text("x = 1\n")
    (tmp_path / "real.py").write_text("y = 2\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "real.py").write_text("y = 2\n")
    assert python_files(tmp_path, 10_000) == ["real.py"]
    assert stable_hash("a", "b") == stable_hash("a", "b") != stable_hash("ab")


def test_toy_repos_have_held_out_targets_and_context_only_identifiers(toy_repos):
    for repo in toy_repos:
        assert not set(repo.context_files) & set(repo.target_files)
        assert repo.chunks and all(len(c.ids) == len(repo.chunks[0].ids) for c in repo.chunks)
        assert all(len(c.ident) == len(c.ids) for c in repo.chunks)
        assert sum(c.n_ident() for c in repo.chunks) > 0
        assert repo.render_text and repo.identifiers
        for s in repo.lines + repo.asserts:
            assert 0 < s.score_from < len(s.ids) and s.target
        # identifiers come from the context files: a name defined only in a target file is not one
        only_in_targets = {f"use_{i}" for i in range(6)} - {f"use_{f[3]}" for f in repo.context_files if f.startswith("mod")}
        assert not only_in_targets & set(repo.identifiers)
    assert any(repo.asserts for repo in toy_repos)
    a = toy_repos[0].asserts[0]
    assert a.kind == "assert" and a.target == "0"


def test_train_repositories_get_chunks_per_repo_and_eval_ones_eval_chunks(tmp_path, tokenizer):
    from training.data.corpus import CorpusConfig, build_corpus

    from .conftest import TOY, write_toy_repo

    roots = [str(write_toy_repo(tmp_path / n, w, n_files=10)) for n, w in TOY.items()]
    base = dict(seq_len=32, sources=["git"], git_paths=roots, min_identifiers=2, min_ident_tokens=1, n_test=1,
                n_val=0, eval_chunks_per_repo=2)
    few = build_corpus(CorpusConfig(**base, chunks_per_repo=1), tokenizer, progress=False)
    many = build_corpus(CorpusConfig(**base, chunks_per_repo=6), tokenizer, progress=False)
    for a, b in zip(few, many, strict=False):
        assert a.name == b.name and a.split == b.split
        if a.split == "train":
            assert len(a.chunks) == 1 and len(b.chunks) > 2  # more than eval_chunks_per_repo
            assert a.chunks[0] == b.chunks[0]  # the best-ranked chunk comes first either way
        else:  # the held-out chunks do not depend on the training budget
            assert len(a.chunks) == 2 and a.chunks == b.chunks
