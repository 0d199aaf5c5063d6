"""Per method: how its rollouts are drawn (`collect_*`) and its loss on them (`*_objective`), one of each.

A `Rollout` holds the sampled tokens and everything scored once before the updates (the rollout policy's and the
teacher's log-probs, the teacher's logits, rewards), so the `inner_steps` updates that follow reuse it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from training.finetune import losses as L
from training.finetune.config import FinetuneConfig
from training.finetune.models import Student, Teacher
from training.finetune.rewards import chrf, get_reward
from training.finetune.rollout import completion_logits, sample, token_logps
from training.finetune.tasks import Prompt


@dataclass
class Rollout:
    """N completions of T tokens, their masks, and what was scored before the update."""

    prompts: list[Prompt]
    tokens: torch.Tensor  # [N, T]
    mask: torch.Tensor  # [N, T] float
    teacher_written: torch.Tensor  # [N, T] bool: tokens the teacher sampled (guidance / off-policy rows)
    offpolicy: torch.Tensor  # [N] bool: whole rollout sampled by the teacher
    texts: list[str] = field(default_factory=list)
    logp_old: torch.Tensor | None = None
    logp_teacher: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None
    logp_ref: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    keep: torch.Tensor | None = None  # [N, T] float: token-sparsity mask
    is_weight: torch.Tensor | None = None  # [N, T]: importance weights for teacher-sampled rows


class Env:
    """The student, the teacher and the tokenizer ids a method needs."""

    def __init__(self, cfg: FinetuneConfig, student: Student, teacher: Teacher, pad_id: int, eos_id: int | None,
                 decode) -> None:
        self.cfg, self.student, self.teacher = cfg, student, teacher
        self.pad_id, self.eos_id, self.decode = pad_id, eos_id, decode

    def sample_student(self, prefixes: list[list[int]], n: int, gen: torch.Generator):
        """Student samples (LoRA applied, no context)."""
        return sample(self.student.active(), prefixes, n, pad_id=self.pad_id, eos_id=self.eos_id,
                      temperature=self.cfg.temperature, generator=gen)

    def sample_teacher(self, prompts: list[Prompt], n: int, gen: torch.Generator, extra: list[list[int]] | None = None):
        """Teacher samples after its context (cached) + the prompt (+ `extra` tokens per row)."""
        prefixes = [p.ids + (extra[i] if extra else []) for i, p in enumerate(prompts)]
        return sample(self.teacher.active(), prefixes, n, pad_id=self.pad_id, eos_id=self.eos_id,
                      temperature=self.cfg.temperature, generator=gen, cache=self.teacher.context_cache())

    def student_logits(self, prompts: list[Prompt], tokens: torch.Tensor) -> torch.Tensor:
        """Student logits over the completion (with gradient when enabled)."""
        return completion_logits(self.student.active(), [p.ids for p in prompts], tokens, self.pad_id)

    def teacher_logits(self, prompts: list[Prompt], tokens: torch.Tensor) -> torch.Tensor:
        """Teacher logits over the completion, after its (cached) context and the prompt."""
        return completion_logits(self.teacher.active(), [p.ids for p in prompts], tokens, self.pad_id,
                                 cache=self.teacher.context_cache())


def _empty_flags(n: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros((n, t), dtype=torch.bool), torch.zeros(n, dtype=torch.bool)


def choose_prompts(cfg: FinetuneConfig, prompts: list[Prompt], step: int) -> list[Prompt]:
    """Prompts of a step, deterministic in (seed, step) so a resumed run sees the same ones; RL repeats each
    prompt `group_size` times (adjacent), keeping `batch_size` completions per step for every method."""
    rng = random.Random(cfg.seed * 1_000_003 + step)
    if cfg.method == "rl":
        g = cfg.rl.group_size
        chosen = [prompts[rng.randrange(len(prompts))] for _ in range(max(cfg.batch_size // g, 1))]
        return [p for p in chosen for _ in range(g)]
    return [prompts[rng.randrange(len(prompts))] for _ in range(cfg.batch_size)]


def collect(env: Env, prompts: list[Prompt], step: int) -> Rollout:
    """Draw the step's completions for the configured method and score them (no gradient)."""
    cfg = env.cfg
    gen = torch.Generator(device=cfg.device).manual_seed(cfg.seed * 7_919 + step)
    t = cfg.task.completion_tokens
    n = len(prompts)
    written, offpolicy = _empty_flags(n, t)
    if cfg.method == "sft" and cfg.sft.source == "text":
        tokens = torch.tensor([p.reference for p in prompts], dtype=torch.long)
        mask = torch.ones((n, t))
    elif cfg.method == "sft":
        tokens, mask = env.sample_teacher(prompts, t, gen)
        written[:], offpolicy[:] = True, True
    elif cfg.method == "tropd" and cfg.tropd.guide_share > 0:
        tokens, mask, written = _guided(env, prompts, gen)
    else:
        tokens, mask = env.sample_student([p.ids for p in prompts], t, gen)
        share = cfg.opd.offpolicy_share if cfg.method == "opd" else 0.0
        k = int(round(share * n))
        if k:  # the first k rows are sampled by the teacher instead (off-policy rollouts)
            tokens[:k], mask[:k] = env.sample_teacher(prompts[:k], t, gen)
            written[:k], offpolicy[:k] = True, True
    r = Rollout(prompts, tokens, mask, written, offpolicy, [env.decode(row[m.bool()]) for row, m in zip(tokens, mask, strict=False)])
    with torch.no_grad():
        old_logits = env.student_logits(prompts, tokens)
        r.logp_old = token_logps(old_logits, tokens)
        r.teacher_logits = env.teacher_logits(prompts, tokens)
        r.logp_teacher = token_logps(r.teacher_logits, tokens)
        r.is_weight = torch.where(offpolicy.unsqueeze(1),
                                  torch.exp(r.logp_old - r.logp_teacher).clamp(max=cfg.opd.is_cap),
                                  torch.ones_like(r.logp_old))
        r.keep = (torch.rand((n, t), generator=gen) < cfg.opd.token_keep).float() if cfg.opd.token_keep < 1 \
            else torch.ones((n, t))
        if cfg.method == "opd" and cfg.opd.focus < 1:
            r.keep = r.keep * L.focus_mask(_credit(cfg, r, old_logits), r.mask * r.keep, cfg.opd.focus)
        reward_fn = get_reward(cfg.rl.reward) if cfg.method == "rl" else chrf
        r.rewards = torch.tensor([reward_fn(txt, p.reference_text) for txt, p in zip(r.texts, prompts, strict=False)])
        if cfg.method == "rl":
            r.advantages = L.group_advantages(r.rewards, cfg.rl.group_size, cfg.rl.scale_rewards)
            if cfg.rl.beta:  # the starting policy = the base model without the student's LoRA
                ref = completion_logits(env.student.reference(), [p.ids for p in prompts], tokens, env.pad_id)
                r.logp_ref = token_logps(ref, tokens)
    return r


def _credit(cfg: FinetuneConfig, r: Rollout, old_logits: torch.Tensor) -> torch.Tensor:
    """Per-token credit for credit-sparse OPD: the entropy drop H_old - H_T ("certainty"), else the disagreement:
    abs(log p_T - log p_old) of the sampled token, or the per-position reverse KL for the full forms."""
    if cfg.opd.focus_by == "disagreement" and cfg.opd.form == "sampled":
        return (r.logp_teacher - r.logp_old).abs()
    ls, lt = torch.log_softmax(old_logits, -1), torch.log_softmax(r.teacher_logits, -1)
    if cfg.opd.focus_by == "certainty":
        return -(ls.exp() * ls).sum(-1) + (lt.exp() * lt).sum(-1)
    return (ls.exp() * (ls - lt)).sum(-1)


def _guided(env: Env, prompts: list[Prompt], gen: torch.Generator):
    """TrOPD off-policy guidance: for the first `guide_share` of rows the teacher writes `guide_tokens` tokens,
    then the student continues on-policy; the other rows are plain student samples."""
    cfg, t = env.cfg, env.cfg.task.completion_tokens
    n = len(prompts)
    k = int(round(cfg.tropd.guide_share * n))
    g = min(cfg.tropd.guide_tokens, t - 1)
    tokens, mask = env.sample_student([p.ids for p in prompts], t, gen)
    written = torch.zeros((n, t), dtype=torch.bool)
    if k:
        head, head_mask = env.sample_teacher(prompts[:k], g, gen)
        tail, tail_mask = env.sample_student([p.ids + head[i].tolist() for i, p in enumerate(prompts[:k])], t - g, gen)
        tokens[:k] = torch.cat([head, tail], 1)
        # a row that ended (EOS) inside the teacher's head ends there
        mask[:k] = torch.cat([head_mask, tail_mask * head_mask[:, -1:]], 1)
        written[:k, :g] = True
    return tokens, mask, written


# ---------------------------------------------------------------------------------------------- objectives

def sft_objective(cfg: FinetuneConfig, r: Rollout, logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Next-token cross-entropy on the rollout's tokens (teacher samples or the reference text), or with
    `sft.soft` the forward KL to the teacher's distribution at those positions."""
    if cfg.sft.soft:
        return L.forward_kl(logits, r.teacher_logits, r.mask), {}
    return L.sft_loss(logits, r.tokens, r.mask), {}


def opd_objective(cfg: FinetuneConfig, r: Rollout, logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """OPD: sampled-token reverse-KL policy gradient (default), the full / top-k reverse KL, or the forward KL."""
    mask = r.mask * r.keep
    if cfg.opd.form == "sampled":
        return L.opd_loss(token_logps(logits, r.tokens), r.logp_old, r.logp_teacher, mask, weights=r.is_weight), {}
    if cfg.opd.form == "forward":
        return L.forward_kl(logits, r.teacher_logits, mask), {}
    top_k = cfg.opd.top_k if cfg.opd.form == "topk" else None
    return L.full_reverse_kl(logits, r.teacher_logits, mask, top_k=top_k), {}


def tropd_objective(cfg: FinetuneConfig, r: Rollout, logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """TrOPD: clipped, outlier-robust OPD on student-written tokens + forward KL on teacher-written ones."""
    c = cfg.tropd
    pg_mask = r.mask * (~r.teacher_written).float()
    loss, stats = L.tropd_loss(token_logps(logits, r.tokens), r.logp_old, r.logp_teacher, pg_mask,
                               clip_eps=c.clip_eps, outlier_z=c.outlier_z, outlier_mode=c.outlier_mode,
                               kl_coef=c.kl_coef)
    guide_mask = r.mask * r.teacher_written.float()
    if c.guide_coef and bool(guide_mask.any()):
        fkl = L.forward_kl(logits, r.teacher_logits, guide_mask, top_k=c.guide_top_k)
        loss = loss + c.guide_coef * fkl
        stats["guide_fkl"] = float(fkl.detach())
    return loss, stats


def rl_objective(cfg: FinetuneConfig, r: Rollout, logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """GRPO on group-normalised rewards; with `opd_weight` > 0 the advantage is the mixed OPD + RL one."""
    c = cfg.rl
    if c.opd_weight:
        adv = L.mixed_advantage(r.advantages, r.logp_old, r.logp_teacher, c.rl_weight, c.opd_weight)
    else:
        adv = c.rl_weight * r.advantages
    loss = L.grpo_loss(token_logps(logits, r.tokens), r.logp_old, adv, r.mask, clip_eps=c.clip_eps, beta=c.beta,
                       logp_ref=r.logp_ref, norm=c.norm, max_tokens=cfg.task.completion_tokens)
    return loss, {}


OBJECTIVES = {"sft": sft_objective, "opd": opd_objective, "tropd": tropd_objective, "rl": rl_objective}
