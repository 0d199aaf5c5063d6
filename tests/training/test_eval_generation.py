"""`code2lora eval`'s generated completions: identifier cut points and next lines per adapter arm, the report
section with intervals over repositories, paired differences, and side_by_side.md."""

from __future__ import annotations

import re

from training.eval.report import build_report, markdown, write_report
from training.eval.run import EvalOptions, Evaluator

from .conftest import tiny_hypernet


def test_generation_arms_report_and_side_by_side(tmp_path, toy_repos, tokenizer):
    model, net, feats = tiny_hypernet(toy_repos, tokenizer)
    opts = EvalOptions(per_repo_lora_repos=0, prompt_chunks=0, bootstrap=50, lines_per_repo=1, asserts_per_repo=0,
                       cuts_per_repo=3, cut_mode="both", cut_prefix_tokens=64, ident_new_tokens=6,
                       gen_lines_per_repo=2, line_prefix_tokens=48, line_new_tokens=40, side_by_side=2)
    raw = Evaluator(model, tokenizer, net, toy_repos, feats, opts).run()
    for res, repo in zip(raw["results"], toy_repos, strict=False):
        gen = res["generation"]
        assert set(gen["ident"]) == {"boundary", "inside"}
        assert set(gen["ident"]["boundary"]) == {"base", "own", "average", "other"}  # the prompt arm is no adapter
        texts = repo.target_texts()
        for cut in gen["cuts"]["boundary"]:
            assert cut.target in repo.identifiers
            assert re.search(re.escape(cut.prefix_text) + r"\s*" + re.escape(cut.target), texts[cut.path])
        for cut in gen["cuts"]["inside"]:
            assert cut.partial and cut.prefix_text.endswith(cut.partial) and cut.target.startswith(cut.partial)
    assert sum(len(r["generation"]["cuts"]["boundary"]) for r in raw["results"]) > 0

    report = build_report(raw, tokenizer, n_boot=50, side_by_side=2)
    gen = report["generation"]
    for mode in ("boundary", "inside"):
        m = gen["modes"][mode]
        assert 0.0 <= m["in_prompt_share"] <= 1.0 and m["n_cuts"] > 0
        for cell in m["arms"].values():
            assert 0.0 <= cell["ident_em"]["mean"] <= 1.0 and 0.0 <= cell["invented_rate"]["mean"] <= 1.0
            assert cell["ident_em"]["lo"] <= cell["ident_em"]["mean"] <= cell["ident_em"]["hi"]
            n_split = cell["ident_em_in_prompt"]["n"] + cell["ident_em_not_in_prompt"]["n"]
            assert n_split == cell["ident_em"]["n"] == m["n_cuts"]
        pairs = {(c["a"], c["b"], c["metric"].split(".")[1]) for c in m["comparisons"]}
        assert pairs == {("own", b, k) for b in ("base", "average", "other") for k in ("ident_em", "invented_rate")}
        assert all(len(c["repo_ci"]) == 2 and c["repos"] == len(toy_repos) for c in m["comparisons"])
    assert set(gen["lines"]) == {"base", "own", "average", "other"}
    assert all(0.0 <= c["line_edit_sim"]["mean"] <= 1.0 and c["line_em"]["n"] > 0 for c in gen["lines"].values())
    assert report["timings"]["generation_s_mean"] > 0
    ranks = report["own_rank"]
    assert ranks["n_adapters"] == len(toy_repos) and ranks["chance"] == (len(toy_repos) + 1) / 2
    assert all(1 <= v["ident_loss"] <= len(toy_repos) for v in ranks["per_repo"].values())
    md = markdown(report)
    assert "Mean rank of the own adapter" in md
    assert "What a user sees" in md and "EM, target not in prompt" in md and "line_edit_sim_teacher_forced" in md

    files = write_report(report, tmp_path / "eval")
    side = files["side_by_side"].read_text()
    assert side.count("expected **`") == len(report["side_by_side"]) > 0
    assert len(report["side_by_side"]) <= 2 * len(toy_repos)
    for label in ("generated, own repo", "base model", "another repo's generated adapter"):
        assert label in side
    for sample in report["side_by_side"]:
        assert set(sample["completions"]) == {"own", "base", "other"} and sample["prompt_tail"]


def test_generation_is_deterministic_and_can_be_switched_off(toy_repos, tokenizer):
    model, net, feats = tiny_hypernet(toy_repos[:2], tokenizer)
    opts = EvalOptions(per_repo_lora_repos=0, prompt_chunks=0, bootstrap=20, lines_per_repo=0, asserts_per_repo=0,
                       cuts_per_repo=2, cut_prefix_tokens=48, ident_new_tokens=4, gen_lines_per_repo=1,
                       line_prefix_tokens=32, line_new_tokens=40)
    runs = [build_report(Evaluator(model, tokenizer, net, toy_repos[:2], feats, opts).run(), tokenizer, n_boot=20)
            for _ in range(2)]
    assert runs[0]["generation"] == runs[1]["generation"] and runs[0]["side_by_side"] == runs[1]["side_by_side"]
    off = EvalOptions(per_repo_lora_repos=0, prompt_chunks=0, bootstrap=20, lines_per_repo=0, asserts_per_repo=0,
                      cuts_per_repo=0, gen_lines_per_repo=0)
    report = build_report(Evaluator(model, tokenizer, net, toy_repos[:2], feats, off).run(), tokenizer, n_boot=20)
    assert "generation" not in report and "side_by_side" not in report


def test_eval_cli_has_the_generation_options():
    from typer.testing import CliRunner

    from code2lora.cli import app

    out = CliRunner().invoke(app, ["eval", "--help"])
    assert out.exit_code == 0
    for opt in ("--cuts", "--cut-mode", "--cut-prefix", "--gen-lines", "--side-by-side", "--no-own-rank"):
        assert opt in out.output, opt


def test_gen_skip_arms_keeps_losses_but_skips_completions(toy_repos, tokenizer):
    model, net, feats = tiny_hypernet(toy_repos, tokenizer)
    opts = EvalOptions(per_repo_lora_repos=0, prompt_chunks=0, bootstrap=10, lines_per_repo=0, asserts_per_repo=0,
                       cuts_per_repo=2, cut_prefix_tokens=48, ident_new_tokens=4, gen_lines_per_repo=0,
                       side_by_side=0, own_rank=False, gen_skip_arms=["average", "other"])
    raw = Evaluator(model, tokenizer, net, toy_repos[:2], feats[:2], opts).run()
    for res in raw["results"]:
        assert {"average", "other"} <= set(res["arms"])  # still scored on losses
        assert set(res["generation"]["ident"]["boundary"]) == {"base", "own"}


def test_vocabulary_and_name_beam_arms_are_completed_and_compared(toy_repos, tokenizer):
    import math

    from training.eval.report import arm_label

    model, net, feats = tiny_hypernet(toy_repos, tokenizer)
    opts = EvalOptions(per_repo_lora_repos=0, prompt_chunks=0, bootstrap=10, lines_per_repo=0, asserts_per_repo=0,
                       cuts_per_repo=3, cut_prefix_tokens=48, ident_new_tokens=6, gen_lines_per_repo=0,
                       side_by_side=0, own_rank=False, gen_skip_arms=["average", "other"], vocab_biases=[math.inf],
                       name_beam=2)
    raw = Evaluator(model, tokenizer, net, toy_repos[:2], feats[:2], opts).run()
    arms = {"base", "own", "base+vocab", "own+vocab", "base+vocab+beam2", "own+vocab+beam2",
            "average+vocab", "average+vocab+beam2", "other+vocab", "other+vocab+beam2"}
    for res in raw["results"]:
        assert set(res["generation"]["ident"]["boundary"]) == arms
    report = build_report(raw, tokenizer, n_boot=10, side_by_side=0)
    pairs = {(c["a"], c["b"]) for c in report["generation"]["modes"]["boundary"]["comparisons"]}
    assert {("own+vocab+beam2", "own+vocab"), ("base+vocab+beam2", "base+vocab"),
            ("own+vocab+beam2", "base+vocab+beam2"), ("own+vocab", "base+vocab")} <= pairs
    assert arm_label("own+vocab+beam2") == "generated, own repo, repository-vocabulary decoding, whole-name beam 2"
    assert arm_label("base+vocab3") == "base model, repository-vocabulary decoding (penalty 3)"


def test_amplified_arms_change_the_adapter_and_are_compared_with_their_controls(tmp_path, toy_repos, tokenizer):
    import math

    import torch

    from hypernet.adapter import write_adapter
    from training.eval.report import arm_label

    model, net, feats = tiny_hypernet(toy_repos, tokenizer)
    common = dict(per_repo_lora_repos=0, prompt_chunks=0, bootstrap=10, lines_per_repo=1, asserts_per_repo=0,
                  cuts_per_repo=2, cut_prefix_tokens=48, ident_new_tokens=4, gen_lines_per_repo=0, side_by_side=0,
                  own_rank=False, gen_skip_arms=["average", "other", "other+vocab"], vocab_biases=[math.inf])
    raw = Evaluator(model, tokenizer, net, toy_repos[:2], feats[:2], EvalOptions(amplify=[3.0], **common)).run()
    for res in raw["results"]:
        assert {"own", "average", "own_x3"} <= set(res["arms"]) and "average_x3" not in res["arms"]
        assert [r.ce for r in res["arms"]["own_x3"]] != [r.ce for r in res["arms"]["own"]]  # it is another adapter
        assert {"own_x3", "own_x3+vocab"} <= set(res["generation"]["ident"]["boundary"])
    report = build_report(raw, tokenizer, n_boot=10, side_by_side=0)
    pairs = {(c["a"], c["b"]) for c in report["generation"]["modes"]["boundary"]["comparisons"]}
    assert {("own_x3+vocab", "average+vocab"), ("own_x3+vocab", "own+vocab"), ("own_x3", "base")} <= pairs
    losses = {(c["a"], c["b"], c["metric"]) for c in report["comparisons"]}
    assert ("own_x3", "average", "chunk.ident_loss") in losses
    assert arm_label("own_x3+vocab") == ("generated, own repo, repository-specific part x3, "
                                         "repository-vocabulary decoding")

    # a fixed reference adapter (as the service would ship): the average is amplified against it too
    ref = {p: (torch.zeros_like(a), torch.zeros_like(b)) for p, (a, b) in raw["adapters"][0].items()}
    write_adapter(ref, tmp_path / "ref", base_model="toy", lora_alpha=net.config.lora_alpha, content_addressed=False)
    fixed = Evaluator(model, tokenizer, net, toy_repos[:2], feats[:2],
                      EvalOptions(amplify=[2.0], amplify_ref=str(tmp_path / "ref"), **common)).run()
    for res in fixed["results"]:
        assert {"own_x2", "average_x2"} <= set(res["arms"])
        # ref = 0: own_x2 is exactly twice the adapter, so it scores like neither own nor the base model
        assert [r.ce for r in res["arms"]["own_x2"]] != [r.ce for r in res["arms"]["own"]]
    report = build_report(fixed, tokenizer, n_boot=10, side_by_side=0)
    pairs = {(c["a"], c["b"]) for c in report["generation"]["modes"]["boundary"]["comparisons"]}
    assert ("own_x2+vocab", "average_x2+vocab") in pairs
