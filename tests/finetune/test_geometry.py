"""Update-geometry numbers on hand-computed matrices, and the report on a real (tiny) run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from training import geometry as G


def test_effective_and_stable_rank():
    assert G.effective_rank(torch.tensor([1.0, 1.0, 0.0])) == pytest.approx(2.0)
    assert G.effective_rank(torch.tensor([5.0, 0.0])) == pytest.approx(1.0)
    p = (0.75, 0.25)
    assert G.effective_rank(torch.tensor([3.0, 1.0])) == pytest.approx(math.exp(-sum(x * math.log(x) for x in p)))
    assert G.effective_rank(torch.zeros(3)) == 0.0
    assert G.stable_rank(torch.tensor([2.0, 1.0])) == pytest.approx(1.25)


def test_changed_fraction_and_top_mass():
    dw = torch.tensor([[0.1, 0.001], [0.0, 0.5]])
    assert G.changed_fraction(dw, torch.ones(2, 2), rel=0.01) == 0.5
    assert G.changed_fraction(dw, None, floor=0.05) == 0.5
    spike = torch.zeros(10, 10)
    spike[3, 4] = 3.0
    assert G.top_mass(spike, 0.01) == pytest.approx(1.0)
    assert G.top_mass(torch.ones(10, 10), 0.01) == pytest.approx(0.01)


def test_lora_svd_matches_dense():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 7, generator=g), torch.randn(5, 3, generator=g)
    u, s, vh = G.lora_svd(a, b, 2.0)
    dense = 2.0 * b.double() @ a.double()
    assert torch.allclose(s, torch.linalg.svdvals(dense)[:3], atol=1e-8)
    assert torch.allclose(u @ torch.diag(s) @ vh, dense, atol=1e-8)


def test_subspace_overlap_and_angles():
    e = torch.eye(4, dtype=torch.float64)
    assert G.subspace_overlap(e[:, :1], e[:, :1]) == pytest.approx(1.0)
    assert G.subspace_overlap(e[:, :1], e[:, 1:2]) == pytest.approx(0.0)
    assert G.subspace_overlap(e[:, [0, 1]], e[:, [0, 2]]) == pytest.approx(0.5)
    diag = ((e[:, 0] + e[:, 1]) / math.sqrt(2)).unsqueeze(1)
    assert G.principal_angles(e[:, :1], diag).tolist() == pytest.approx([45.0])
    assert G.principal_angles(e[:, [0, 1]], e[:, [0, 2]]).tolist() == pytest.approx([0.0, 90.0], abs=1e-6)


def test_module_geometry_principal_direction_overlap():
    w0 = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64))
    e = torch.eye(4, dtype=torch.float64)
    along = G.module_geometry("model.layers.2.mlp.up_proj", 0.1 * torch.outer(e[0], e[0]), w0, k=1)
    away = G.module_geometry("model.layers.2.mlp.up_proj", 0.1 * torch.outer(e[3], e[2]), w0, k=1)
    assert along.overlap_left == pytest.approx(1.0) and along.overlap_right == pytest.approx(1.0)
    assert away.overlap_left == pytest.approx(0.0) and away.overlap_right == pytest.approx(0.0)
    assert along.layer == 2 and along.module_type == "up_proj"
    assert along.effective_rank == pytest.approx(1.0) and along.random_overlap == pytest.approx(0.25)
    assert along.changed_frac == pytest.approx(1 / 16)  # one entry moved, 0.1 > 1% of 4


def test_locking_curve():
    e = torch.eye(6, dtype=torch.float64)

    def upd(step, cols):
        dw = sum(torch.outer(e[c], e[c]) * (i + 1) for i, c in enumerate(cols))
        return G.Update("x", step, "opd", {"m": dw}, {"m": G.svd(dw)})

    curve = G.locking_curve([upd(1, [0, 3]), upd(2, [0, 1]), upd(3, [0, 1])], k=2)
    assert [c["overlap_final"] for c in curve] == pytest.approx([0.5, 1.0, 1.0])
    assert math.isnan(curve[0]["overlap_prev"]) and curve[1]["overlap_prev"] == pytest.approx(0.5)
    assert curve[0]["angle_max_final"] == pytest.approx(90.0) and curve[2]["angle_max_final"] == pytest.approx(0.0, abs=1e-5)


def test_analyze_cli_on_a_tiny_run(student_dir, tmp_path):
    from typer.testing import CliRunner

    from code2lora.cli import app
    from tests.finetune.conftest import toy_config

    cfg_path = tmp_path / "run.json"
    cfg = toy_config(student_dir, None, tmp_path / "run", "sft", steps=2, save_every=1, eval_every=2)
    cfg["sft"] = {"source": "text"}
    cfg["teacher"] = {"context": False}
    cfg_path.write_text(json.dumps(cfg))
    runner = CliRunner()
    res = runner.invoke(app, ["finetune", "sft", "--config", str(cfg_path)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["analyze", "geometry", str(tmp_path / "run"), "--out", str(tmp_path / "geo"), "-k", "4"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "geo" / "report.json").read_text())[0]
    assert rep["step"] == 2 and len(rep["locking"]) == 3
    assert 0 < rep["summary"]["effective_rank"] <= 4 and 0 <= rep["summary"]["overlap_left"] <= 1
    assert (tmp_path / "geo" / "geometry_layers.png").is_file() and (tmp_path / "geo" / "geometry_locking.png").is_file()
    assert "| run |" in (tmp_path / "geo" / "report.md").read_text()


def test_relative_to_start_subtracts_a_nonzero_starting_adapter():
    g = torch.Generator().manual_seed(0)
    start = torch.randn(6, 2, generator=g, dtype=torch.float64) @ torch.randn(2, 5, generator=g, dtype=torch.float64)
    step = torch.zeros(6, 5, dtype=torch.float64)
    step[0, 0] = 1.0  # training changed one weight

    def up(n, d):
        return G.Update(f"s{n}", n, "opd", {"m": d}, {"m": G.svd(d)})

    rel, moved = G.relative_to_start([up(0, start), up(1, start + step)])
    assert moved and len(rel) == 1 and rel[0].step == 1
    assert torch.allclose(rel[0].dense["m"], step)
    assert G.stable_rank(rel[0].svds["m"][1]) == pytest.approx(1.0)  # the update, not the adapter, has rank 1
    zero = torch.zeros(6, 5, dtype=torch.float64)
    same, moved = G.relative_to_start([up(0, zero), up(1, step)])
    assert not moved and len(same) == 2  # a run from zero is untouched


def test_init_adapter_with_modules_the_student_lacks_is_refused(tmp_path):
    from hypernet.adapter import write_adapter
    from hypernet.basemodel import TargetModule
    from training.lora import LoraParams

    t = [TargetModule("model.layers.1.self_attn.q_proj", "q_proj", 1, 4, 4)]
    lora = LoraParams(t, 2, 4.0)
    extra = {"model.layers.0.self_attn.q_proj": (torch.ones(2, 4), torch.ones(4, 2)),
             t[0].path: (torch.ones(2, 4), torch.full((4, 2), 0.5))}
    write_adapter({t[0].path: extra[t[0].path]}, tmp_path / "ok", base_model="x", lora_alpha=4.0,
                  content_addressed=False)
    lora.load_adapter(tmp_path / "ok")
    assert torch.equal(lora.b[0].detach(), torch.full((4, 2), 0.5))
    write_adapter(extra, tmp_path / "bad", base_model="x", lora_alpha=4.0, content_addressed=False)
    with pytest.raises(ValueError, match="does not train"):
        lora.load_adapter(tmp_path / "bad")
