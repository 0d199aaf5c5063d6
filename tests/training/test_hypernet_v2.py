"""Hypernetwork v2: the base model's hidden states read in chunks, side by side with the input embeddings,
context-reproduction chunks, and v1 checkpoints keeping their version id."""

from __future__ import annotations

import json

import torch

from hypernet.encoder import TokenEncoder
from hypernet.model import Code2LoRAHypernet, HypernetArch, HypernetConfig
from training.hypernet.config import TrainConfig
from training.hypernet.run import add_context_chunks, encode_repos
from training.hypernet.split import SplitLM, top_targets
from training.hypernet.train import Trainer

from .conftest import tiny_llama

V2 = {"rank": 4, "d_model": 32, "n_atoms": 8, "use_sentence": False, "token_source": "hidden_embed",
      "token_layers": 1, "token_chunk": 16}


def test_chunked_hidden_states_are_the_bottom_layers_per_chunk(tokenizer):
    model = tiny_llama()
    enc = TokenEncoder(tokenizer, model=model, source="hidden_embed", layers=1, chunk=16, max_tokens=100)
    text = "def restock_shelf(barcode_digits): return warehouse_bin"  # 55 bytes: 4 chunks, the last one short
    ids = enc.token_ids(text)
    out = enc.encode(text)
    assert out.shape == (ids.numel(), 2 * model.config.hidden_size)
    split = SplitLM(model, 1)
    for start in range(0, ids.numel(), 16):
        piece = ids[start : start + 16]
        torch.testing.assert_close(out[start : start + piece.numel(), : model.config.hidden_size],
                                   split.bottom(piece[None])[0], rtol=1e-4, atol=1e-5)
    emb = model.get_input_embeddings().weight[ids]
    torch.testing.assert_close(out[:, model.config.hidden_size :], emb)
    # Order matters now: the same tokens reversed give other vectors (a bag of embeddings would not).
    rev = enc.encode_ids(ids.flip(0))
    assert not torch.allclose(rev[:, : model.config.hidden_size].flip(0), out[:, : model.config.hidden_size])


def test_v1_config_keeps_its_canonical_form():
    model = tiny_llama()
    cfg = HypernetConfig.for_base(model.config, top_targets(model, 1), rank=4, d_model=32, n_atoms=8)
    assert "token_layers" not in cfg.to_dict() and "token_chunk" not in cfg.to_dict()
    v2 = HypernetConfig.for_base(model.config, top_targets(model, 1), **V2)
    assert v2.to_dict()["token_layers"] == 1 and HypernetConfig.from_dict(v2.to_dict()) == v2
    assert v2.token_dim == 2 * model.config.hidden_size


def test_shipped_checkpoint_version_is_unchanged():
    from hypernet.checkpoint import load_checkpoint, shipped_checkpoint, version_id

    weights = shipped_checkpoint()
    assert weights.is_file(), weights
    net = load_checkpoint(weights)
    assert version_id(net) == (weights.parent / "VERSION").read_text().strip()


def test_v2_hypernet_trains_on_hidden_states_and_context_chunks(tmp_path, toy_repos, tokenizer):
    import copy

    repos = copy.deepcopy(toy_repos)
    model = tiny_llama()
    cfg = TrainConfig(name="v2", out_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"), adapt_layers=0,
                      steps=30, batch_size=3, lr=1e-2, warmup=2, eval_every=30, save_every=30,
                      other_positions=1.0, hypernet=HypernetArch(**V2), progress=False, context_chunks_per_repo=2)
    cfg.corpus.seq_len = 48
    added = add_context_chunks(repos, tokenizer, cfg)
    assert added == 2 * sum(r.split == "train" for r in repos)
    assert all(c.kind == "context" for r in repos if r.split == "train" for c in r.chunks[-2:])
    assert add_context_chunks(repos, tokenizer, cfg) == 0  # idempotent
    feats = encode_repos(repos, use_sentence=False, use_tokens=True, tokenizer=tokenizer, embeddings=None,
                         model=model, token_source="hidden_embed", token_layers=1, token_chunk=16)
    assert feats[0].tokens.dtype == torch.bfloat16 and feats[0].tokens.shape[1] == 2 * model.config.hidden_size
    trainer = Trainer(cfg, model, repos, feats)
    assert trainer.split.first == 0  # all layers adapted
    before = trainer.validate()
    trainer.run(resume=False)
    rec = [json.loads(x) for x in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()][-1]
    assert rec["val_own"] < before["val_own"]
    from hypernet.checkpoint import load_checkpoint

    net = load_checkpoint(tmp_path / "out" / "hypernet.safetensors")
    assert isinstance(net, Code2LoRAHypernet) and net.config.token_source == "hidden_embed"
    assert {r[2] for r in net.config.targets} == {0, 1}


def test_device_option_is_validated():
    import pytest

    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="tpu")
    assert TrainConfig.from_dict({"device": "cuda:1"}).device == "cuda:1"


def test_cuda_without_a_gpu_fails_before_anything_loads(tmp_path, monkeypatch):
    import pytest

    from training.hypernet import run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("hypernet.basemodel.load_base_model", lambda *a, **k: pytest.fail("model loaded"))
    cfg = TrainConfig(device="cuda", work_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="no CUDA"):
        run.load_everything(cfg)
