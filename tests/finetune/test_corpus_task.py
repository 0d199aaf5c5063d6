"""The `corpus` task kind: fine-tuning a corpus repository sees exactly the eval harness's split and chunks."""

from __future__ import annotations

import json

import pytest

from tests.training.conftest import TOY, byte_tokenizer, write_toy_repo
from training.data.corpus import build_corpus
from training.finetune.config import TaskConfig
from training.finetune.tasks import build_task
from training.hypernet.config import load_config


def test_corpus_task_uses_the_harness_split_and_chunks(tmp_path):
    tok = byte_tokenizer()
    roots = [str(write_toy_repo(tmp_path / name, words)) for name, words in list(TOY.items())[:2]]
    corpus = {"seq_len": 48, "sources": ["git"], "git_paths": roots, "min_identifiers": 2, "min_ident_tokens": 1,
              "target_frac": 0.4, "context_budget": 200, "prefix_tokens": 40, "max_target_tokens": 40,
              "n_test": 1, "n_val": 0, "eval_chunks_per_repo": 3}
    cfg_path = tmp_path / "train.json"
    cfg_path.write_text(json.dumps({"corpus": corpus, "work_dir": str(tmp_path / "work")}))
    repos = build_corpus(load_config(cfg_path).corpus, tok, cache_dir=tmp_path / "work", progress=False)
    repo = repos[0]

    task = build_task(TaskConfig(kind="corpus", repo=repo.name, train_config=str(cfg_path), prompt_tokens=16,
                                 completion_tokens=4, n_prompts=5, eval_chunks=0), tok, context_budget=64)
    assert task.name == repo.name
    assert task.eval_chunks == [c.ids for c in repo.chunks] and task.eval_ident == [c.ident for c in repo.chunks]
    assert task.info["context_files"] == repo.context_files
    assert task.prompts and {p.source for p in task.prompts} <= set(repo.context_files)  # never a held-out file
    assert task.context_ids  # the teacher's context is the repository's rendered API

    with pytest.raises(ValueError, match="not in the corpus"):
        build_task(TaskConfig(kind="corpus", repo="git/nope", train_config=str(cfg_path)), tok, 64)
    with pytest.raises(ValueError, match="needs task.train_config"):
        build_task(TaskConfig(kind="corpus", repo=repo.name), tok, 64)
