"""Training loop on the tiny model: split forward is exact, loss goes down, resume reproduces the state."""

from __future__ import annotations

import json

import pytest
import torch

from hypernet.encoder import EncodedContext
from hypernet.model import HypernetArch
from training.hypernet.config import TrainConfig, load_config
from training.hypernet.run import encode_repos
from training.hypernet.split import SplitLM, top_targets
from training.hypernet.train import SharedLoRA, Trainer

from .conftest import tiny_hypernet, tiny_llama


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(name="toy", out_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"), adapt_layers=1,
                steps=8, batch_size=3, lr=3e-3, warmup=2, eval_every=4, save_every=2, other_positions=1.0,
                hypernet=HypernetArch(rank=4, d_model=32, n_atoms=8), progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _feats(repos, model, tokenizer) -> list[EncodedContext]:
    return encode_repos(repos, use_sentence=False, use_tokens=True, tokenizer=tokenizer,
                        embeddings=model.get_input_embeddings().weight.detach())


def test_split_forward_equals_the_full_model():
    model = tiny_llama()
    ids = torch.randint(0, 256, (2, 20))
    split = SplitLM(model, 1)
    with torch.no_grad():
        full = model(input_ids=ids).logits
        mine = split.logits(split.top(split.bottom(ids)))
    torch.testing.assert_close(mine, full, rtol=1e-4, atol=1e-5)
    assert [t.layer for t in top_targets(model, 1)] == [1] * 7
    assert len(top_targets(model, 0)) == 14


def test_loss_goes_down_on_a_toy_corpus(tmp_path, toy_repos, tokenizer):
    model = tiny_llama()
    cfg = _cfg(tmp_path, steps=60, lr=1e-2, warmup=3, eval_every=60, save_every=60, contrastive_weight=0.5)
    trainer = Trainer(cfg, model, toy_repos, _feats(toy_repos, model, tokenizer))
    before = trainer.validate()
    trainer.run(resume=False)
    records = [json.loads(x) for x in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert len(records) == 60 and all(r["kind"] == "train" for r in records)
    first = sum(r["loss"] for r in records[:5]) / 5
    last = sum(r["loss"] for r in records[-5:]) / 5
    assert last < first - 0.2, (first, last)
    after = records[-1]
    assert after["val_own"] < before["val_own"] and after["val_own"] < after["val_base"]
    assert "contrastive" in records[0]
    assert all(p.grad is None for p in model.parameters())  # base model frozen
    for name in ("hypernet.safetensors", "train_config.json", "curves.png", "VERSION"):
        assert (tmp_path / "out" / name).is_file()
    from hypernet.checkpoint import load_checkpoint

    net = load_checkpoint(tmp_path / "out" / "hypernet.safetensors")
    assert net.config.extra["adapt_layers"] == 1 and {r[2] for r in net.config.targets} == {1}


def test_resume_gives_the_same_state(tmp_path, toy_repos, tokenizer):
    model = tiny_llama()
    feats = _feats(toy_repos, model, tokenizer)
    straight = Trainer(_cfg(tmp_path / "a"), model, toy_repos, feats)
    straight.run(resume=False)
    resumed = Trainer(_cfg(tmp_path / "b"), model, toy_repos, feats)
    resumed.run(resume=False, stop_after=3)  # saves at 2 and at the stop (3)
    assert resumed.step == 3
    again = Trainer(_cfg(tmp_path / "b"), model, toy_repos, feats)  # a new process, in effect
    again.run(resume=True)
    assert again.step == 8
    for (k, a), (_, b) in zip(straight.net.state_dict().items(), again.net.state_dict().items(), strict=False):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    sa, sb = straight.opt.state_dict()["state"], again.opt.state_dict()["state"]
    for key in sa:
        torch.testing.assert_close(sa[key]["exp_avg"], sb[key]["exp_avg"], rtol=0, atol=0)
    la = [json.loads(x)["loss"] for x in (tmp_path / "a" / "out" / "train_log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "b" / "out" / "train_log.jsonl").read_text().splitlines()]
    assert la == lb


def test_shared_lora_arm_trains_and_exports_a_peft_adapter(tmp_path, toy_repos, tokenizer):
    model = tiny_llama()
    cfg = _cfg(tmp_path, arm="shared_lora", steps=6, hypernet=HypernetArch(rank=4, lora_alpha=8.0))
    trainer = Trainer(cfg, model, toy_repos, [None] * len(toy_repos))
    assert isinstance(trainer.net, SharedLoRA)
    trainer.run(resume=False)
    from hypernet.adapter import read_adapter

    acfg, tensors = read_adapter(tmp_path / "out" / "adapter")
    assert acfg["r"] == 4 and len(tensors) == 7
    assert any(float(b.abs().sum()) > 0 for _, b in tensors.values())


def test_config_file_round_trip_and_unknown_keys(tmp_path):
    cfg = _cfg(tmp_path)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg.to_dict()))
    again = load_config(path, steps=99)
    assert again.steps == 99 and again.corpus == cfg.corpus and again.hypernet == cfg.hypernet
    path.write_text(json.dumps({**cfg.to_dict(), "stepz": 1}))
    with pytest.raises(ValueError, match="stepz"):
        load_config(path)


def test_a_top_layer_checkpoint_serves_through_the_adapter_generator(tmp_path, toy_repos, tokenizer):
    """The service path: AdapterGenerator accepts a checkpoint that adapts only the top layers."""
    from hypernet.adapter import read_adapter
    from hypernet.generator import AdapterGenerator

    model = tiny_llama()
    model_dir = tmp_path / "tiny"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    cfg = _cfg(tmp_path, steps=2)
    trainer = Trainer(cfg, model, toy_repos, _feats(toy_repos, model, tokenizer))
    trainer.run(resume=False)
    gen = AdapterGenerator.load(tmp_path / "out" / "hypernet.safetensors", model_dir)

    class Ctx:
        digest = "d" * 64

        def render(self, budget_tokens=2048, count_tokens=None):
            return toy_repos[0].render_text

        def render_items(self, max_items=256):
            return toy_repos[0].items

    art = gen.generate(Ctx(), tmp_path / "adapters")
    _, tensors = read_adapter(art.path)
    assert sorted(tensors) == sorted(row[0] for row in trainer.net.config.targets)
    assert gen.token_budget == cfg.corpus.context_budget  # served with the context size it was trained with


def test_context_dropout_hides_tokens_only_when_asked(toy_repos, tokenizer):
    from training.hypernet.train import adapters_for

    _model, net, feats = tiny_hypernet(toy_repos[:2], tokenizer)
    path = net.config.targets[0][0]
    with torch.no_grad():
        full = adapters_for(net, feats)[0][path][1]
        again = adapters_for(net, feats, 0.0, torch.Generator().manual_seed(1))[0][path][1]
        d1 = adapters_for(net, feats, 0.5, torch.Generator().manual_seed(1))[0][path][1]
        d2 = adapters_for(net, feats, 0.5, torch.Generator().manual_seed(1))[0][path][1]
        everything = adapters_for(net, feats, 1.0, torch.Generator().manual_seed(1))[0][path][1]
    assert torch.equal(full, again)
    assert torch.equal(d1, d2) and not torch.allclose(d1, full)  # seeded, and it does hide tokens
    assert torch.isfinite(everything).all()  # dropping "everything" still keeps one token per context
