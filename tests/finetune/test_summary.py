"""Run summaries: spike counting and the stability statistics the OPD/TrOPD comparison reports."""

from __future__ import annotations

import json

import pytest

from training.finetune.plots import spikes, summarize


def test_spikes_counts_values_far_above_the_median():
    assert spikes([1.0, 1.1, 0.9, 1.0, 5.0, 1.05]) == 1
    assert spikes([1.0, 1.1, 0.9, 1.0, 1.2, 1.05]) == 0
    assert spikes([0.1, 5.0]) == 0  # too short to call anything a spike


def test_summary_reports_the_shared_reverse_kl_curve(tmp_path):
    recs = [{"step": 0, "kind": "eval", "eval_loss": 2.0, "per_chunk_loss": [2.0]}]
    for step, (loss, rk) in enumerate([(1.0, 0.5), (0.9, 0.4), (3.0, 0.45), (0.8, 0.3)], start=1):
        recs.append({"step": step, "kind": "train", "loss": loss, "rkl": rk, "rkl_full": rk, "grad_norm": 1.0,
                     "reward": 0.1, "sec": 1.0})
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = summarize(path)
    assert s["steps"] == 4 and s["start"] == {"eval_loss": 2.0}
    assert s["rkl_full"]["max"] == 0.5 and s["rkl_full"]["mean"] == pytest.approx(0.4125)
    # step-to-step changes -0.1, +0.05, -0.15: mean -1/15, population std sqrt(0.0216667 / 3)
    assert s["rkl_full"]["step_diff_std"] == pytest.approx(0.0849837, rel=1e-5)
    assert s["loss"]["max"] == 3.0


def test_config_rejects_unknown_opd_forms_and_bad_focus():
    from training.finetune.config import config_from_dict

    assert config_from_dict({"opd": {"form": "forward", "focus": 0.5}}).opd.form == "forward"
    with pytest.raises(ValueError, match="opd.form"):
        config_from_dict({"opd": {"form": "jsd"}})
    with pytest.raises(ValueError, match="opd.focus"):
        config_from_dict({"opd": {"focus": 0.0}})
    with pytest.raises(ValueError, match="opd.focus_by"):
        config_from_dict({"opd": {"focus_by": "entropy"}})
    with pytest.raises(ValueError, match="unknown OPDConfig keys"):
        config_from_dict({"opd": {"fokus": 0.5}})
