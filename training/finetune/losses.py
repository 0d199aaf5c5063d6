"""One loss per method, written out: SFT, OPD (sampled-token and full-vocabulary reverse KL), TrOPD, GRPO, OPD+RL.

Shapes: per-token tensors are [B, T] over completion tokens; `mask` is 1.0 where a token counts (float or bool).
`logp` is log pi_theta(y_t) of the policy being trained (with gradient), `logp_old` the rollout policy's
log-prob of the same token (no gradient), `logp_teacher` the teacher's. Formulas: docs/TRAINING.md and
/work/shared/research/TRAINING.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hypernet.rewards import group_advantages as group_advantages  # moved down (the RL refinement uses it)

# 0.6745 = Phi^-1(0.75): scales the median absolute deviation to a standard deviation for normal data.
MAD_TO_STD = 0.6745


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over positions where mask is set (0 when the mask is empty)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def sft_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of `targets` [B, T] under `logits` [B, T, V], averaged over masked tokens."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
    return masked_mean(ce, mask)


def reverse_kl_estimate(logp_student: torch.Tensor, logp_teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k1 estimate of KL(student || teacher) on student samples: mean of log p_S(y_t) - log p_T(y_t)."""
    return masked_mean(logp_student - logp_teacher, mask)


def opd_advantage(logp_old: torch.Tensor, logp_teacher: torch.Tensor) -> torch.Tensor:
    """Per-token OPD advantage A_t = log p_T(y_t) - log p_old(y_t) (minus the reverse-KL estimate), detached."""
    return (logp_teacher - logp_old).detach()


def opd_loss(logp: torch.Tensor, logp_old: torch.Tensor, logp_teacher: torch.Tensor, mask: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
    """Sampled-token OPD: -sum_t m_t w_t rho_t A_t / sum_t m_t, rho_t = exp(logp - logp_old) (plain importance
    sampling, no clip); `weights` are per-token importance weights for rollouts the student did not sample."""
    adv = opd_advantage(logp_old, logp_teacher)
    rho = torch.exp(logp - logp_old.detach())
    w = torch.ones_like(adv) if weights is None else weights.detach()
    return -masked_mean(w * rho * adv, mask)


def focus_mask(score: torch.Tensor, mask: torch.Tensor, share: float) -> torch.Tensor:
    """1.0 on the `share` of masked tokens with the largest `score` over the batch (at least one), 0 elsewhere:
    credit-sparse OPD keeps only its highest-credit tokens. Ties at the threshold are kept."""
    valid = mask.bool()
    n = int(valid.sum())
    if n == 0 or share >= 1.0:
        return valid.float()
    k = max(1, int(round(share * n)))
    threshold = score[valid].topk(k).values.min()
    return (valid & (score >= threshold)).float()


def _log_probs(logits: torch.Tensor, top_k: int | None, support_from: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if top_k is None:
        return F.log_softmax(logits, -1)
    # Restrict to the top-k tokens of `support_from` (the teacher) and renormalise there; -inf elsewhere.
    idx = support_from.float().topk(top_k, dim=-1).indices
    keep = torch.full_like(logits, float("-inf")).scatter(-1, idx, 0.0)
    return F.log_softmax(logits + keep, -1)


def _kl(logq_from: torch.Tensor, logq_to: torch.Tensor) -> torch.Tensor:
    """Per-position KL(from || to) = sum_v p_from (log p_from - log p_to); 0*log0 terms are dropped."""
    p = logq_from.exp()
    diff = torch.where(p > 0, logq_from - logq_to, torch.zeros_like(p))
    return (p * diff).sum(-1)


def full_reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                    top_k: int | None = None) -> torch.Tensor:
    """Full-vocabulary reverse KL sum_v p_S(v)(log p_S(v) - log p_T(v)) at each student-visited position, masked
    mean; with `top_k` both distributions are renormalised on the teacher's top-k tokens. Differentiable in p_S."""
    ls = _log_probs(student_logits, top_k, teacher_logits)
    lt = _log_probs(teacher_logits.detach(), top_k, teacher_logits).detach()
    return masked_mean(_kl(ls, lt), mask)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
               top_k: int | None = None) -> torch.Tensor:
    """Forward KL sum_v p_T(v)(log p_T(v) - log p_S(v)) (teacher soft targets), masked mean; optional top-k."""
    ls = _log_probs(student_logits, top_k, teacher_logits)
    lt = _log_probs(teacher_logits.detach(), top_k, teacher_logits).detach()
    return masked_mean(_kl(lt, ls), mask)


def _median(x: torch.Tensor) -> torch.Tensor:
    # The interpolated median (torch.median returns the lower middle value for an even count).
    return torch.quantile(x.float(), 0.5)


def robust_z(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Robust z-score 0.6745 (x - median) / MAD over the masked entries (0 everywhere when MAD is 0)."""
    vals = x[mask.bool()]
    if vals.numel() == 0:
        return torch.zeros_like(x)
    med = _median(vals)
    mad = _median((vals - med).abs())
    if float(mad) == 0.0:
        return torch.zeros_like(x)
    return MAD_TO_STD * (x - med) / mad


@dataclass(frozen=True)
class OutlierResult:
    """Per-token advantages after outlier handling, the token weights to use, and which tokens were outliers."""

    advantage: torch.Tensor
    weight: torch.Tensor
    outlier: torch.Tensor


def handle_outliers(adv: torch.Tensor, mask: torch.Tensor, z: float, mode: str = "clip") -> OutlierResult:
    """Find tokens whose advantage has |robust z| > z; `clip`: clamp them to the band edge (median +- z MAD/0.6745),
    `mask`: give them weight 0, `downweight`: weight z/|z_t| (the gradient of an outlier is capped at the band)."""
    zs = robust_z(adv, mask)
    outlier = (zs.abs() > z) & mask.bool()
    weight = torch.ones_like(adv)
    out = adv
    if mode == "clip":
        vals = adv[mask.bool()]
        if vals.numel():
            med = _median(vals)
            half = z * _median((vals - med).abs()) / MAD_TO_STD
            out = torch.where(outlier, adv.clamp(float(med - half), float(med + half)), adv)
    elif mode == "mask":
        weight = (~outlier).to(adv.dtype)
    elif mode == "downweight":
        weight = torch.where(outlier, z / zs.abs().clamp_min(1e-12), weight)
    elif mode != "none":
        raise ValueError(f"unknown outlier mode {mode!r}")
    return OutlierResult(out.detach(), weight.detach(), outlier)


def k3_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi_theta || pi_ref): exp(d) - d - 1 with d = logp_ref - logp (>= 0)."""
    d = logp_ref.detach() - logp
    return torch.exp(d) - d - 1


def clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, eps: float) -> torch.Tensor:
    """PPO per-token loss -min(rho A, clip(rho, 1-eps, 1+eps) A)."""
    return -torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)


def tropd_loss(logp: torch.Tensor, logp_old: torch.Tensor, logp_teacher: torch.Tensor, mask: torch.Tensor, *,
               clip_eps: float = 0.2, outlier_z: float = 3.0, outlier_mode: str = "clip", kl_coef: float = 0.0,
               weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Trust-region OPD (our reading): OPD advantages with robust-z outlier handling, a PPO-clipped ratio against
    the rollout policy, and an optional k3 KL penalty to that (previous) policy. Returns (loss, stats)."""
    res = handle_outliers(opd_advantage(logp_old, logp_teacher), mask, outlier_z, outlier_mode)
    ratio = torch.exp(logp - logp_old.detach())
    w = res.weight if weights is None else res.weight * weights.detach()
    loss = masked_mean(w * clipped_surrogate(ratio, res.advantage, clip_eps), mask)
    kl_prev = masked_mean(k3_kl(logp, logp_old), mask)
    if kl_coef:
        loss = loss + kl_coef * kl_prev
    m = mask.bool()
    clipped = ((ratio - 1).abs() > clip_eps) & m
    stats = {"outlier_frac": float(res.outlier.sum()) / max(int(m.sum()), 1),
             "clip_frac": float(clipped.sum()) / max(int(m.sum()), 1), "kl_prev": float(kl_prev.detach())}
    return loss, stats


def grpo_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
              clip_eps: float = 0.2, beta: float = 0.0, logp_ref: torch.Tensor | None = None,
              norm: str = "grpo", max_tokens: int | None = None) -> torch.Tensor:
    """GRPO: per-token clipped surrogate with sequence (or per-token [B, T]) advantages, + beta * k3 KL to a
    reference; `norm` = "grpo" (per-sequence mean, then batch mean), "dapo"/"bnpo" (token mean over the batch) or
    "dr_grpo" (sum / (B * max_tokens))."""
    adv = advantages.detach()
    if adv.dim() == 1:
        adv = adv.unsqueeze(1).expand_as(logp)
    per_tok = clipped_surrogate(torch.exp(logp - logp_old.detach()), adv, clip_eps)
    if beta:
        if logp_ref is None:
            raise ValueError("beta > 0 needs logp_ref")
        per_tok = per_tok + beta * k3_kl(logp, logp_ref)
    m = mask.to(per_tok.dtype)
    if norm == "grpo":
        return ((per_tok * m).sum(1) / m.sum(1).clamp_min(1.0)).mean()
    if norm in ("dapo", "bnpo"):
        return masked_mean(per_tok, m)
    if norm == "dr_grpo":
        return (per_tok * m).sum() / (per_tok.shape[0] * (max_tokens or per_tok.shape[1]))
    raise ValueError(f"unknown norm {norm!r}")


def mixed_advantage(seq_advantages: torch.Tensor, logp_old: torch.Tensor, logp_teacher: torch.Tensor,
                    w_rl: float = 1.0, w_opd: float = 1.0) -> torch.Tensor:
    """OPD+RL per-token advantage w_rl * A_GRPO (broadcast over tokens) + w_opd * (log p_T - log p_old)."""
    return (w_rl * seq_advantages.detach().unsqueeze(1) + w_opd * opd_advantage(logp_old, logp_teacher)).detach()
