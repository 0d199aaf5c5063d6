"""The many-repository sweep: run order, and the per-split tables it reads back from the runs' metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.finetune.sweep import aggregate, markdown, plan, plot


def _fake_run(out: Path, split: str, repo: str, seed: int, arm: str, before: list[float], after: list[float],
              steps: int = 4, last_step: int | None = None) -> None:
    run = out / split / repo / f"s{seed}" / arm
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"steps": steps}))
    recs = [{"step": 0, "kind": "eval", "eval_loss": sum(before) / len(before), "per_chunk_loss": before,
             "eval_ident_loss": 3.0, "train_text_loss": 2.0},
            {"step": 2, "kind": "train", "loss": 0.1},
            {"step": last_step or steps, "kind": "train+eval", "eval_loss": sum(after) / len(after),
             "per_chunk_loss": after, "eval_ident_loss": 2.9, "train_text_loss": 2.2}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    spikes = 2 if seed else 0
    (run / "summary.json").write_text(json.dumps({"grad_norm": {"mean": 1.0 + seed, "max": 2.0, "spikes": spikes}}))


def test_aggregate_pairs_each_run_with_its_own_start_and_skips_unfinished_runs(tmp_path):
    _fake_run(tmp_path, "test", "pypi__a", 0, "opd", [2.0, 3.0], [1.9, 2.9])  # -0.1
    _fake_run(tmp_path, "test", "pypi__a", 1, "opd", [2.0, 3.0], [2.1, 3.1])  # +0.1 -> repo mean 0.0
    _fake_run(tmp_path, "test", "pypi__b", 0, "opd", [1.0, 1.0], [0.8, 0.8])  # -0.2
    _fake_run(tmp_path, "test", "pypi__c", 0, "opd", [1.0, 1.0], [0.0, 0.0], last_step=2)  # stopped early: skipped
    _fake_run(tmp_path, "val", "pypi__d", 0, "sft_text", [1.0], [1.5])
    table = aggregate(tmp_path)
    opd = table["test"]["opd"]
    assert opd["repos"] == 2 and opd["runs"] == 3
    assert opd["per_repo"] == pytest.approx({"pypi__a": 0.0, "pypi__b": -0.2})
    assert opd["change"][0] == pytest.approx(-0.1)
    assert opd["improved"] == 1
    assert opd["ident_change"] == pytest.approx(-0.1) and opd["train_text_change"] == pytest.approx(0.2)
    assert table["val"]["sft_text"]["change"][0] == pytest.approx(0.5)
    assert json.loads((tmp_path / "sweep_results.json").read_text())["test"]["opd"]["repos"] == 2
    # mean change by step over the three finished runs: (-0.1 + 0.1 - 0.2) / 3 at step 4
    assert [c[0] for c in opd["curve"]] == [0, 4] and opd["curve"][1][1] == pytest.approx(-0.2 / 3)
    assert opd["curve"][1][2] == pytest.approx(-0.1) and opd["curve"][1][3] == 3
    assert opd["stability"]["grad_norm_spikes"] == pytest.approx(2 / 3)
    assert opd["stability"]["grad_norm_mean"] == pytest.approx(4 / 3)
    md = markdown(table)
    assert "| opd | 2 (3) | -0.100" in md and "**val**" in md
    assert "| opd | 1.33 | 2.00 | 0.67 |" in md
    plot(table, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 1000


def test_plan_runs_each_arm_on_every_repository_before_the_next_arm(tmp_path):
    init = tmp_path / "generated"
    for name in ("pypi__a", "pypi__b"):
        (init / name).mkdir(parents=True)
    recipe = {"method": "opd", "steps": 3, "seed": 0, "task": {"repo": None, "seed": 0}}
    runs = plan(recipe, ["tropd", "opd"], {"val": ["pypi/a"], "test": ["pypi/b"]}, [0, 1], tmp_path / "out", init)
    names = list(runs)
    assert names[:4] == ["val/pypi/a/s0/tropd", "test/pypi/b/s0/tropd", "val/pypi/a/s1/tropd", "test/pypi/b/s1/tropd"]
    assert len(names) == 8
    cfg = json.loads(runs["test/pypi/b/s1/opd"].read_text())
    assert cfg["seed"] == 1 and cfg["task"]["seed"] == 1 and cfg["task"]["repo"] == "pypi/b"
    assert cfg["student"]["init_adapter"] == str(init / "pypi__b") and cfg["method"] == "opd"
    assert cfg["out_dir"] == str(tmp_path / "out" / "test" / "pypi__b" / "s1" / "opd")
    with pytest.raises(SystemExit, match="no starting adapter"):
        plan(recipe, ["opd"], {"test": ["pypi/zzz"]}, [0], tmp_path / "out2", init)
