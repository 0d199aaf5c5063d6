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


def test_experiment_starts_every_arm_from_the_generated_adapter_and_collects_for_the_harness(tmp_path):
    import torch

    from hypernet.adapter import write_adapter
    from training.finetune.experiment import arm_configs, collect_adapters

    recipe = {"method": "opd", "task": {"kind": "corpus"}, "student": {"layers": 4}}
    paths = arm_configs(recipe, ["opd", "tropd"], tmp_path / "run", "pypi/requests", "gen/pypi__requests")
    for arm, p in paths.items():
        cfg = json.loads(p.read_text())
        assert cfg["student"] == {"layers": 4, "init_adapter": "gen/pypi__requests"}
        assert cfg["task"]["repo"] == "pypi/requests" and cfg["out_dir"] == str(tmp_path / "run" / arm)
        (tmp_path / "run" / arm).mkdir(parents=True)
        (tmp_path / "run" / arm / "config.json").write_text(json.dumps(cfg))
    write_adapter({"model.layers.1.mlp.down_proj": (torch.ones(2, 3), torch.ones(3, 2))},
                  tmp_path / "run" / "opd" / "adapter", base_model="x", lora_alpha=4.0, content_addressed=False)
    got = collect_adapters([tmp_path / "run"], ["opd", "tropd"], tmp_path / "arms")
    assert got == {"opd": tmp_path / "arms" / "opd"}  # tropd has no final adapter yet: not collected
    assert (tmp_path / "arms" / "opd" / "pypi__requests" / "adapter_config.json").is_file()


def test_experiment_set_overrides_nested_recipe_keys():
    from training.finetune.experiment import apply_sets

    recipe = {"steps": 24, "task": {"kind": "corpus", "completion_tokens": 16}}
    got = apply_sets(recipe, ["temperature=0.6", "task.completion_tokens=4", "name=x=y", "opd.form=full"])
    assert got == {"steps": 24, "temperature": 0.6, "name": "x=y",
                   "task": {"kind": "corpus", "completion_tokens": 4}, "opd": {"form": "full"}}
    assert recipe["task"]["completion_tokens"] == 16  # the recipe itself is untouched
    with pytest.raises(ValueError, match="KEY=VALUE"):
        apply_sets(recipe, ["steps"])


def _code_bpe(text: str):
    """A byte-level BPE trained on `text`: it learns to merge a newline with the indentation after it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text] * 5, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


def test_prompts_are_cut_between_the_files_own_tokens():
    """With a tokenizer that merges a newline with the next line's indentation, a prompt ends with that merged
    token, as the model sees the file, and never with a lone newline before an indented line."""
    from training.finetune.config import TaskConfig
    from training.finetune.tasks import line_prompts

    text = "class Shelf:\n    def restock(self, count):\n        self.items += count\n        return self\n" * 3
    tok = _code_bpe(text)
    file_ids = tok(text, add_special_tokens=False)["input_ids"]
    assert any(tok.decode([i]).startswith("\n ") for i in file_ids)  # the merge this test is about exists
    head = tok("# file: shelf.py\n", add_special_tokens=False)["input_ids"]
    prompts = line_prompts({"shelf.py": text}, tok, TaskConfig(prompt_tokens=12, completion_tokens=4, n_prompts=50))
    assert len(prompts) >= 4
    for p in prompts:
        body = p.ids[len(head):]
        assert p.ids[: len(head)] == head and len(p.reference) == 4
        whole = body + p.reference  # a contiguous slice of the file's own tokens
        assert any(file_ids[i: i + len(whole)] == whole for i in range(len(file_ids)))
        last = tok.decode(body[-1:])
        assert "\n" in last and not last[last.rfind("\n") + 1:].strip()  # the prompt ends where a line begins
        assert tok.decode(p.reference).strip()[:4] in ("def ", "self", "retu", "clas")
