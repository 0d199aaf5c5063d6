"""Every eval metric on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.data.corpus import Sequence
from training.eval.metrics import (
    bootstrap_ci,
    delta_cosine_matrix,
    edit_similarity,
    exact_match,
    excludes_zero,
    levenshtein,
    mean_offdiag,
    paired_diff_ci,
    param_cosine_matrix,
)
from training.eval.report import paired, rows
from training.eval.run import SeqResult, seq_metrics


def test_exact_match_ignores_whitespace_only():
    assert exact_match("foo(a,  b)", " foo(a, b) ") == 1.0
    assert exact_match("foo(a, b)", "foo(a,b)") == 0.0
    assert exact_match("", "") == 1.0


def test_levenshtein_and_edit_similarity():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3 and levenshtein("abc", "abc") == 0
    assert edit_similarity("abc", "abc") == 1.0
    assert edit_similarity("", "") == 1.0
    assert edit_similarity("", "abcd") == 0.0
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)


def test_bootstrap_interval_contains_mean_and_detects_a_clear_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 0.5, size=200)
    m, lo, hi = bootstrap_ci(x, n=1000, seed=0)
    assert lo < m < hi and m == pytest.approx(x.mean())
    assert excludes_zero((m, lo, hi))
    noise = rng.normal(0.0, 1.0, size=50)
    assert not excludes_zero(bootstrap_ci(noise - noise.mean(), n=1000, seed=0))
    assert all(math.isnan(v) for v in bootstrap_ci([], n=10))


def test_cluster_bootstrap_is_wider_when_groups_disagree():
    # two repositories with opposite effects: sequence-level CI is narrow, repository-level CI spans both
    vals = [1.0] * 50 + [-0.8] * 50
    groups = ["a"] * 50 + ["b"] * 50
    _, lo_s, hi_s = bootstrap_ci(vals, n=2000, seed=0)
    _, lo_g, hi_g = bootstrap_ci(vals, groups=groups, n=2000, seed=0)
    assert (hi_g - lo_g) > 2 * (hi_s - lo_s)
    assert lo_g == pytest.approx(-0.8) and hi_g == pytest.approx(1.0)


def test_paired_difference():
    a, b = [1.0, 2.0, 3.0, 4.0], [0.5, 1.5, 2.5, 3.5]
    m, lo, hi = paired_diff_ci(a, b, n=200, seed=0)
    assert m == lo == hi == pytest.approx(0.5)
    with pytest.raises(ValueError):
        paired_diff_ci([1.0], [1.0, 2.0])


def _adapter(seed: int, scale: float = 1.0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"m1": (torch.randn(2, 5, generator=g), scale * torch.randn(4, 2, generator=g)),
            "m2": (torch.randn(2, 3, generator=g), scale * torch.randn(3, 2, generator=g))}


def _flat_delta(ad: dict) -> torch.Tensor:
    return torch.cat([(b @ a).flatten() for a, b in (ad[k] for k in sorted(ad))]).double()


def test_delta_cosine_matches_explicit_products_and_ignores_scale():
    ads = [_adapter(0), _adapter(1), _adapter(0, scale=3.0)]
    m = delta_cosine_matrix(ads)
    f = [_flat_delta(a) for a in ads]
    expected = float(torch.nn.functional.cosine_similarity(f[0], f[1], dim=0))
    assert m[0, 1] == pytest.approx(expected, abs=1e-6)
    assert m[0, 2] == pytest.approx(1.0) and np.allclose(np.diag(m), 1.0)
    assert mean_offdiag(np.eye(3)) == 0.0
    p = param_cosine_matrix([_adapter(0), _adapter(0)])
    assert p[0, 1] == pytest.approx(1.0)


class _Tok:
    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_seq_metrics_on_hand_made_results():
    tok = _Tok()
    chunk = Sequence([1, 2, 3, 4], [False, True, True, False], 1, "chunk", "f.py")
    r = SeqResult([1.0, 2.0, 4.0], [True, False, True], [True, True, False], [2, 9, 4])
    m = seq_metrics(tok, chunk, r)
    assert m["loss"] == pytest.approx(7 / 3) and m["ident_loss"] == pytest.approx(1.5) and "em" not in m
    line = Sequence([120, ord("a"), ord("b"), ord("c")], [False] * 4, 1, "line", "f.py", "abc")
    hit = seq_metrics(tok, line, SeqResult([0.1, 0.1, 0.1], [True] * 3, [False] * 3, [97, 98, 99]))
    assert hit["em"] == 1.0 and hit["es"] == 1.0 and hit["ident_loss"] is None
    miss = seq_metrics(tok, line, SeqResult([0.1, 3.0, 0.1], [True, False, True], [False] * 3, [97, 120, 99]))
    assert miss["em"] == 0.0 and miss["es"] == pytest.approx(2 / 3)


def test_paired_comparison_over_shared_sequences():
    seqs = [Sequence([1, 2, 3], [False, True, True], 1, "chunk", "f.py") for _ in range(3)]
    def res(vals):
        return [SeqResult(v, [False, False], [True, True], [0, 0]) for v in vals]
    raw = {"results": [{"repo": "r1", "seqs": seqs, "prompt": [],
                        "arms": {"own": res([[1.0, 1.0], [2.0, 2.0], [1.0, 3.0]]),
                                 "base": res([[2.0, 2.0], [3.0, 3.0], [2.0, 4.0]])}}]}
    by_arm = rows(raw, _Tok())
    c = paired(by_arm, "own", "base", "ident_loss", "chunk", 200, 0)
    assert c["diff"] == pytest.approx(-1.0) and c["n"] == 3 and c["wins"] == 3 and c["excludes_zero_seq"] is True
    assert c["seq_ci"] == [pytest.approx(-1.0), pytest.approx(-1.0)]
    assert paired(by_arm, "own", "missing", "loss", "chunk", 10, 0) == {}
