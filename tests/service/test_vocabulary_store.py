"""The saved repository vocabulary: written at ingest, rebuilt once from context.json for an older workspace."""

from __future__ import annotations

import json
from types import SimpleNamespace

from hypernet.context.repo import extract_repo
from hypernet.metrics import known_identifiers
from service.jobs.workspace import save_context
from service.vocabulary import repo_vocabulary, save_vocabulary, vocabulary_path


def _state(tmp_path):
    from collections import OrderedDict

    return SimpleNamespace(settings=SimpleNamespace(workspace_dir=tmp_path / "ws"), recent_contexts=OrderedDict())


def _context(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "shop.py").write_text("def restock_shelf(bin_id):\n    return ShelfLabel(bin_id)\n\n"
                                 "class ShelfLabel:\n    pass\n")
    return extract_repo(src)


def test_saved_vocabulary_is_read_back(tmp_path) -> None:
    state, ctx = _state(tmp_path), _context(tmp_path)
    (tmp_path / "ws" / "7").mkdir(parents=True)
    names = save_vocabulary(state, 7, ctx)
    assert {"restock_shelf", "ShelfLabel", "bin_id"} <= names
    assert names == frozenset(known_identifiers(ctx))
    assert repo_vocabulary(state, 7) == names
    assert json.loads(vocabulary_path(state, 7).read_text()) == sorted(names)


def test_an_older_workspace_gets_its_vocabulary_from_context_json(tmp_path) -> None:
    state, ctx = _state(tmp_path), _context(tmp_path)
    (tmp_path / "ws" / "3").mkdir(parents=True)
    save_context(state, 3, "abc123", ctx)  # a workspace from before vocabularies were saved: no vocabulary.json
    assert not vocabulary_path(state, 3).exists()
    names = repo_vocabulary(state, 3)
    assert names is not None and "restock_shelf" in names
    assert vocabulary_path(state, 3).exists()  # built once, then read from the file
    assert repo_vocabulary(state, 3) == names


def test_no_context_no_vocabulary(tmp_path) -> None:
    state = _state(tmp_path)
    (tmp_path / "ws" / "5").mkdir(parents=True)
    assert repo_vocabulary(state, 5) is None
