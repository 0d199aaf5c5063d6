"""The evaluation run end to end on the tiny model, and the CLI commands."""

from __future__ import annotations

from training.eval.report import build_report, markdown, write_report
from training.eval.run import EvalOptions, Evaluator
from training.hypernet.train import SharedLoRA

from .conftest import tiny_hypernet


def test_every_arm_is_scored_and_reported(tmp_path, toy_repos, tokenizer):
    model, net, feats = tiny_hypernet(toy_repos, tokenizer)
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
    for method in ("opd", "tropd", "rl", "sft"):  # the fine-tuning trainers, in the same group and as `finetune`
        for group in ("train", "finetune"):
            out = runner.invoke(app, [group, method, "--help"])
            assert out.exit_code == 0 and "--config" in out.output, (group, method, out.output)
    out = runner.invoke(app, ["eval", "--help"])
    assert out.exit_code == 0 and "--checkpoint" in out.output and "--repos" in out.output


def test_exported_adapters_scored_as_extra_arm_equal_own(tmp_path, toy_repos, tokenizer):
    """--export-adapters writes PEFT folders that, read back as an extra arm, score exactly like the own arm."""
    import pytest

    from hypernet.adapter import read_adapter, write_adapter
    from training.eval.run import adapter_dirname, load_extra_adapter

    model, net, feats = tiny_hypernet(toy_repos, tokenizer)
    export = tmp_path / "gen"
    opts = EvalOptions(per_repo_lora_repos=0, prompt_chunks=0, bootstrap=50, lines_per_repo=1, asserts_per_repo=0,
                       export_adapters=str(export))
    Evaluator(model, tokenizer, net, toy_repos, feats, opts).run()
    assert sorted(p.name for p in export.iterdir()) == sorted(adapter_dirname(r.name) for r in toy_repos)

    opts = EvalOptions(per_repo_lora_repos=0, prompt_chunks=0, bootstrap=50, lines_per_repo=1, asserts_per_repo=0,
                       extra_arms={"reloaded": str(export)})
    report = build_report(Evaluator(model, tokenizer, net, toy_repos, feats, opts).run(), tokenizer, n_boot=50)
    assert list(report["arms"])[-1] == "reloaded"
    assert abs(report["arms"]["reloaded"]["chunk.loss"]["mean"] - report["arms"]["own"]["chunk.loss"]["mean"]) < 1e-5
    cmp = {(c["a"], c["b"], c["metric"]) for c in report["comparisons"]}
    assert ("reloaded", "own", "chunk.loss") in cmp and ("reloaded", "base", "chunk.ident_loss") in cmp
    assert "reloaded" in markdown(report)

    # an adapter that also touches a layer below the evaluated ones is refused, not half-applied
    acfg, tensors = read_adapter(export / adapter_dirname(toy_repos[0].name))
    low = {p.replace("layers.1.", "layers.0."): ab for p, ab in tensors.items()}
    bad = tmp_path / "bad"
    write_adapter({**tensors, **low}, bad / adapter_dirname(toy_repos[0].name), base_model="x",
                  lora_alpha=float(acfg["lora_alpha"]), content_addressed=False)
    with pytest.raises(ValueError, match="below"):
        load_extra_adapter(bad, toy_repos[0].name, first_layer=1)
    assert load_extra_adapter(bad, "no/such-repo", first_layer=1) is None


def test_extra_arm_cli_rejects_bad_specs(tmp_path):
    import pytest
    import typer

    from code2lora.commands.eval import _parse_arms

    assert _parse_arms([f"ft={tmp_path}"]) == {"ft": str(tmp_path)}
    for bad in ("ft", "=x", f"ft={tmp_path / 'missing'}"):
        with pytest.raises(typer.BadParameter):
            _parse_arms([bad])
