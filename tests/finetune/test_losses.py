"""Each loss on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from training.finetune import losses as L
from training.finetune.rewards import chrf, edit_similarity, exact_match, get_reward, levenshtein


def t(*rows):
    return torch.tensor(rows[0] if len(rows) == 1 else rows, dtype=torch.float32)


def test_masked_mean_ignores_masked_tokens():
    assert float(L.masked_mean(t([1.0, 2.0, 100.0]), t([1.0, 1.0, 0.0]))) == pytest.approx(1.5)
    assert float(L.masked_mean(t([1.0]), t([0.0]))) == 0.0


def test_sft_loss_is_cross_entropy_of_targets():
    logits = torch.log(t([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])).unsqueeze(0)  # [1, 2, 3]
    loss = L.sft_loss(logits, torch.tensor([[0, 1]]), t([1.0, 1.0]).unsqueeze(0))
    assert float(loss) == pytest.approx((-math.log(0.5) - math.log(0.8)) / 2, abs=1e-6)


def test_opd_loss_value_and_gradient_on_policy():
    # logp_old = logp: rho = 1, loss = -mean(logpT - logp_old) over the mask = the reverse-KL estimate.
    logp_old = t([math.log(0.5), math.log(0.2), math.log(0.9)]).unsqueeze(0)
    logp_t = t([math.log(0.25), math.log(0.4), math.log(0.1)]).unsqueeze(0)
    mask = t([1.0, 1.0, 0.0]).unsqueeze(0)
    logp = logp_old.clone().requires_grad_(True)
    loss = L.opd_loss(logp, logp_old, logp_t, mask)
    adv = [math.log(0.25 / 0.5), math.log(0.4 / 0.2)]
    assert float(loss) == pytest.approx(-(adv[0] + adv[1]) / 2, abs=1e-6)
    assert float(L.reverse_kl_estimate(logp_old, logp_t, mask)) == pytest.approx(float(loss), abs=1e-6)
    loss.backward()
    # d loss / d logp_t = -A_t * m_t / sum(m): pushes down tokens the teacher dislikes, up the ones it likes.
    assert logp.grad[0].tolist() == pytest.approx([-adv[0] / 2, -adv[1] / 2, 0.0], abs=1e-6)


def test_opd_loss_importance_ratio_and_weights():
    logp_old = t([math.log(0.5)]).unsqueeze(0)
    logp = t([math.log(0.6)]).unsqueeze(0)  # rho = 1.2
    logp_t = t([math.log(0.25)]).unsqueeze(0)  # A = log 0.5
    loss = L.opd_loss(logp, logp_old, logp_t, t([1.0]).unsqueeze(0), weights=t([0.5]).unsqueeze(0))
    assert float(loss) == pytest.approx(-0.5 * 1.2 * math.log(0.5), abs=1e-6)


def test_full_reverse_kl_hand_computed_and_zero_when_equal():
    ps, pt = [0.5, 0.5, 0.0 + 1e-30], [0.25, 0.25, 0.5]
    sl, tl = torch.log(t(ps)).view(1, 1, 3), torch.log(t(pt)).view(1, 1, 3)
    m = t([1.0]).view(1, 1)
    # KL(S||T) = 0.5 log 2 + 0.5 log 2 = log 2 ; KL(T||S) is huge (teacher mass where the student has none)
    assert float(L.full_reverse_kl(sl, tl, m)) == pytest.approx(math.log(2), abs=1e-5)
    assert float(L.forward_kl(sl, tl, m)) > 10
    assert float(L.full_reverse_kl(tl, tl, m)) == pytest.approx(0.0, abs=1e-6)


def test_top_k_kl_renormalises_on_teacher_support():
    sl = torch.log(t([0.2, 0.3, 0.5])).view(1, 1, 3)
    tl = torch.log(t([0.6, 0.3, 0.1])).view(1, 1, 3)
    m = t([1.0]).view(1, 1)
    # teacher top-2 = tokens {0, 1}: student renormalised (0.4, 0.6), teacher (2/3, 1/3)
    expect = 0.4 * math.log(0.4 / (2 / 3)) + 0.6 * math.log(0.6 / (1 / 3))
    assert float(L.full_reverse_kl(sl, tl, m, top_k=2)) == pytest.approx(expect, abs=1e-5)
    expect_fwd = (2 / 3) * math.log((2 / 3) / 0.4) + (1 / 3) * math.log((1 / 3) / 0.6)
    assert float(L.forward_kl(sl, tl, m, top_k=2)) == pytest.approx(expect_fwd, abs=1e-5)


def test_full_reverse_kl_gradient_flows_to_student_only():
    sl = torch.zeros(1, 2, 4, requires_grad=True)
    tl = torch.randn(1, 2, 4, requires_grad=True)
    L.full_reverse_kl(sl, tl, torch.ones(1, 2)).backward()
    assert sl.grad.abs().sum() > 0 and tl.grad is None


def test_robust_z_and_outlier_modes():
    adv = t([0.0, 1.0, -1.0, 2.0, -2.0, 50.0]).unsqueeze(0)
    mask = torch.ones_like(adv)
    # median 0.5, |x - 0.5| = .5 .5 1.5 1.5 2.5 49.5 -> MAD 1.5
    z = L.robust_z(adv, mask)
    assert float(z[0, 5]) == pytest.approx(0.6745 * 49.5 / 1.5, abs=1e-4)
    clip = L.handle_outliers(adv, mask, z=3.0, mode="clip")
    assert clip.outlier[0].tolist() == [False] * 5 + [True]
    band = 0.5 + 3.0 * 1.5 / 0.6745
    assert float(clip.advantage[0, 5]) == pytest.approx(band, abs=1e-4)
    assert clip.advantage[0, :5].tolist() == adv[0, :5].tolist()
    assert L.handle_outliers(adv, mask, 3.0, "mask").weight[0].tolist() == [1.0] * 5 + [0.0]
    down = L.handle_outliers(adv, mask, 3.0, "downweight").weight[0]
    assert float(down[5]) == pytest.approx(3.0 / float(z[0, 5]), abs=1e-5)
    # masked-out tokens never count as outliers, and do not move the median
    m2 = t([1, 1, 1, 1, 1, 0]).unsqueeze(0)
    assert not L.handle_outliers(adv, m2, 3.0, "clip").outlier.any()


def test_tropd_clips_ratio_and_outlier_advantage():
    logp_old = torch.zeros(1, 6)
    logp_t = t([0.0, 1.0, -1.0, 2.0, -2.0, 50.0]).unsqueeze(0)  # A = logp_t - 0
    logp = torch.full((1, 6), math.log(1.5), requires_grad=True)  # rho = 1.5 everywhere
    loss, stats = L.tropd_loss(logp, logp_old, logp_t, torch.ones(1, 6), clip_eps=0.2, outlier_z=3.0)
    band = 0.5 + 3.0 * 1.5 / 0.6745
    adv = [0.0, 1.0, -1.0, 2.0, -2.0, band]
    # -min(1.5 A, 1.2 A): A > 0 -> -1.2 A ; A < 0 -> -1.5 A
    per = [-(1.2 * a if a > 0 else 1.5 * a) for a in adv]
    assert float(loss) == pytest.approx(sum(per) / 6, abs=1e-4)
    assert stats["outlier_frac"] == pytest.approx(1 / 6)
    assert stats["clip_frac"] == 1.0
    loss.backward()
    # clipped positive-advantage tokens get no gradient; negative ones keep the unclipped term
    g = logp.grad[0].tolist()
    assert g[1] == 0.0 and g[3] == 0.0 and g[5] == 0.0
    assert g[2] == pytest.approx(-1.5 * -1.0 / 6, abs=1e-5)


def test_tropd_kl_penalty_to_previous_policy():
    logp_old = torch.zeros(1, 1)
    logp = torch.full((1, 1), math.log(2.0))
    loss0, _ = L.tropd_loss(logp, logp_old, logp_old, torch.ones(1, 1), kl_coef=0.0, outlier_mode="none")
    loss1, st = L.tropd_loss(logp, logp_old, logp_old, torch.ones(1, 1), kl_coef=1.0, outlier_mode="none")
    d = -math.log(2.0)  # k3 = e^d - d - 1 = 0.5 + log 2 - 1
    assert st["kl_prev"] == pytest.approx(math.exp(d) - d - 1, abs=1e-6)
    assert float(loss1 - loss0) == pytest.approx(math.exp(d) - d - 1, abs=1e-6)


def test_group_advantages():
    r = t([1.0, 0.0, 0.0, 0.0])
    adv = L.group_advantages(r, group_size=2)
    # group 1: mean .5, unbiased std sqrt(.5); group 2: all equal -> 0
    s = math.sqrt(0.5) + 1e-4
    assert adv.tolist() == pytest.approx([0.5 / s, -0.5 / s, 0.0, 0.0], abs=1e-5)
    assert L.group_advantages(r, 2, scale=False).tolist() == [0.5, -0.5, 0.0, 0.0]


def test_grpo_loss_normalisations_and_clip():
    logp_old = torch.zeros(2, 3)
    logp = torch.zeros(2, 3)
    adv = t(1.0, -1.0)
    mask = t([1, 1, 0], [1, 0, 0])
    # rho = 1: per-token loss -A ; grpo: mean over seq then batch = (-1 + 1) / 2 = 0
    assert float(L.grpo_loss(logp, logp_old, adv, mask)) == pytest.approx(0.0)
    # dapo: token mean = (-1 -1 +1) / 3
    assert float(L.grpo_loss(logp, logp_old, adv, mask, norm="dapo")) == pytest.approx(-1 / 3)
    # dr_grpo: sum / (B * T) = -1 / 6
    assert float(L.grpo_loss(logp, logp_old, adv, mask, norm="dr_grpo")) == pytest.approx(-1 / 6)
    # clipped: rho = 2 with A = +1 -> -min(2, 1.2) = -1.2
    lp = torch.full((1, 1), math.log(2.0))
    assert float(L.grpo_loss(lp, torch.zeros(1, 1), t(1.0), torch.ones(1, 1))) == pytest.approx(-1.2, abs=1e-6)
    # KL to reference adds beta * k3
    with_kl = L.grpo_loss(torch.zeros(1, 1), torch.zeros(1, 1), t(0.0), torch.ones(1, 1), beta=0.5,
                          logp_ref=torch.full((1, 1), math.log(2.0)))
    assert float(with_kl) == pytest.approx(0.5 * (2.0 - math.log(2.0) - 1), abs=1e-6)


def test_mixed_advantage():
    adv = L.mixed_advantage(t([1.0]), torch.zeros(1, 2), t([0.5, -1.0]).unsqueeze(0), w_rl=2.0, w_opd=0.5)
    assert adv.tolist() == [[2.25, 1.5]]


def test_rewards_hand_computed():
    # chrF (beta 2, char orders 1..6): order1 P=R=2/3, order2 P=R=1/2, order3 0; 3 effective orders.
    assert chrf("abc", "abd") == pytest.approx((2 / 3 + 1 / 2 + 0) / 3, abs=1e-9)
    assert chrf("same text", "same text") == pytest.approx(1.0)
    assert exact_match(" x = 1\n", "x = 1") == 1.0 and exact_match("x = 2", "x = 1") == 0.0
    assert levenshtein("kitten", "sitting") == 3
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert get_reward("line_exact_match")("\n  y = f(x)\nmore", "y = f(x)") == 1.0
    with pytest.raises(ValueError):
        get_reward("bleu")


def test_focus_mask_keeps_the_largest_scores_among_counted_tokens():
    score = torch.tensor([[0.1, 0.9, 0.5, 7.0], [0.3, 0.8, 0.2, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])  # the 7.0 is padding: never chosen
    # 7 counted tokens, share 0.3 -> round(2.1) = 2 tokens: 0.9 and 0.8
    assert L.focus_mask(score, mask, 0.3).tolist() == [[0, 1, 0, 0], [0, 1, 0, 0]]
    assert L.focus_mask(score, mask, 0.01).tolist() == [[0, 1, 0, 0], [0, 0, 0, 0]]  # at least one
    assert torch.equal(L.focus_mask(score, mask, 1.0), mask)
    assert L.focus_mask(score, torch.zeros_like(mask), 0.5).sum() == 0
