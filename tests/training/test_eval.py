"""The evaluation run end to end on the tiny model, and the CLI commands."""

from __future__ import annotations

import torch

from training.eval.report import build_report, markdown, write_report
from training.eval.run import EvalOptions, Evaluator
from training.hypernet.config import TrainConfig
from training.hypernet.run import encode_repos
from training.hypernet.train import SharedLoRA, build_hypernet

from .conftest import tiny_llama


def test_every_arm_is_scored_and_reported(tmp_path, toy_repos, tokenizer):
    model = tiny_llama()
    cfg = TrainConfig(adapt_layers=1, hypernet={"rank": 4, "d_model": 32, "n_atoms": 8, "use_sentence": False})
    net = build_hypernet(cfg, model).eval()
    torch.nn.init.normal_(net.head_b.weight, std=0.05)
    feats = encode_repos(toy_repos, use_sentence=False, use_tokens=True, tokenizer=tokenizer,
                         embeddings=model.get_input_embeddings().weight.detach())
    shared = SharedLoRA(net_targets := [__import__("hypernet.basemodel", fromlist=["TargetModule"]).TargetModule(*r)
                                        for r in net.config.targets], 4, 8.0)
    assert len(net_targets) == 7
    opts = EvalOptions(per_repo_lora_repos=1, per_repo_steps=1, prompt_chunks=1, bootstrap=100, lines_per_repo=2,
                       asserts_per_repo=1)
    ev = Evaluator(model, tokenizer, net, toy_repos, feats, opts, shared_lora=(shared.tensors(), shared.scaling))
    raw = ev.run()
    report = build_report(raw, tokenizer, n_boot=100)
    assert set(report["arms"]) == {"base", "shared_lora", "own", "average", "other", "per_repo_lora", "prompt"}
    own, base = report["arms"]["own"], report["arms"]["base"]
    assert own["chunk.loss"]["n"] == sum(len(r.chunks) for r in toy_repos)
    assert own["line.em"]["n"] > 0 and own["assert.em"]["n"] > 0
    # the shared LoRA starts with B = 0: identical to the base model
    assert report["arms"]["shared_lora"]["chunk.loss"]["mean"] == base["chunk.loss"]["mean"]
    assert own["chunk.loss"]["mean"] != base["chunk.loss"]["mean"]
    cos = report["cosine"]["delta_w"]
    assert len(cos) == len(toy_repos) and all(abs(cos[i][i] - 1) < 1e-9 for i in range(len(cos)))
    assert report["timings"]["per_repo_lora_s_mean"] > 0 and report["timings"]["hypernet_forward_ms_mean"] > 0
    files = write_report(report, tmp_path / "eval")
    assert all(p.is_file() for p in files.values())
    md = markdown(report)
    assert "own − base" in md and "per-repo LoRA" in md


def test_cli_registers_train_and_eval():
    from typer.testing import CliRunner

    from code2lora.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["train", "hypernet", "--help"])
    assert out.exit_code == 0 and "--config" in out.output
    out = runner.invoke(app, ["eval", "--help"])
    assert out.exit_code == 0 and "--checkpoint" in out.output and "--repos" in out.output
