"""The pieces of the reinforcement-learning refinement (`RefineConfig(method="rl")`, run by `hypernet.refine`).

Prompts are cut out of the repository's own context files right before a use of a repository identifier (the
cut points of `hypernet.metrics`, the same kind the evaluation scores); the adapter samples a group of short
rollouts per prompt; each rollout's reward is the identifier reward (`hypernet.rewards.identifier_reward`: used
names must exist in the repository's symbol table, its imports, the builtins or the prompt) plus the similarity
reward of the fine-tuning RL path (chrF against the file's true continuation). The update is REINFORCE with
group-relative advantages (one update per batch of rollouts, so the PPO ratio is 1) on the LoRA's A and B only,
plus KL(start || current) at the rollouts' positions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from hypernet.lora_apply import applied_lora
from hypernet.metrics import repo_cuts
from hypernet.metrics.cuts import Cut, tokenize
from hypernet.rewards import chrf, group_advantages, identifier_reward
from hypernet.rollout import completion_logits, sample

if TYPE_CHECKING:
    from hypernet.adapter import LoraTensors


@dataclass
class RLPrompt:
    """A cut point of a context file and the file's true continuation (the similarity reward's reference)."""

    cut: Cut
    reference: str


def rl_prompts(tokenizer: Any, files: Mapping[str, str], repo_idents: set[str], *, n: int, prompt_tokens: int,
               new_tokens: int, seed: int = 0) -> list[RLPrompt]:
    """Up to `n` boundary cut points over `files` (seeded, stable), each with the next `new_tokens` tokens of the
    file as the reference continuation."""
    cuts = repo_cuts(files, tokenizer, repo_idents, n=n, seed=seed, max_prefix_tokens=prompt_tokens, mode="boundary")
    streams: dict[str, list[int]] = {}
    out: list[RLPrompt] = []
    for cut in cuts:
        if cut.path not in streams:
            streams[cut.path] = tokenize(tokenizer, files[cut.path])[0]
        ids = streams[cut.path]
        k, first = len(cut.prefix_ids), cut.prefix_ids[0]
        end = next((j + k for j in range(len(ids) - k + 1)
                    if ids[j] == first and ids[j: j + k] == cut.prefix_ids), None)
        if end is None:  # cannot happen for cuts of these files; skip rather than guess
            continue
        ref = tokenizer.decode(ids[end: end + new_tokens], skip_special_tokens=True,
                               clean_up_tokenization_spaces=False)
        out.append(RLPrompt(cut, ref))
    return out


@dataclass
class Rollouts:
    """G rollouts for each of a step's prompts (adjacent), what they scored, and the tensors of the update."""

    prompts: list[RLPrompt]  # one per row
    tokens: torch.Tensor  # [N, T]
    mask: torch.Tensor  # [N, T] float: tokens up to and including the first EOS
    texts: list[str]
    rewards: torch.Tensor  # [N]
    ident_rewards: list[float]
    sim_rewards: list[float]
    invented: int
    known: int


def rollout_rewards(prompt_texts: Sequence[str], texts: Sequence[str], references: Sequence[str],
                    known: set[str] | frozenset[str], truncated: Sequence[bool], ident_weight: float,
                    sim_weight: float) -> tuple[list[float], list[float], list[float], int, int]:
    """(total, identifier, similarity rewards, invented count, known count) of each rollout."""
    total, idr, sim = [], [], []
    n_bad = n_good = 0
    for p, t, r, tr in zip(prompt_texts, texts, references, truncated, strict=True):
        ir = identifier_reward(p, t, known, truncated=tr)
        s = chrf(t, r) if sim_weight else 0.0
        n_bad += ir.invented
        n_good += ir.known
        idr.append(ir.reward)
        sim.append(s)
        total.append(ident_weight * ir.reward + sim_weight * s)
    return total, idr, sim, n_bad, n_good


def collect(model: Any, tokenizer: Any, params: LoraTensors, scaling: float, prompts: list[RLPrompt],
            known: set[str] | frozenset[str], *, group: int, new_tokens: int, temperature: float,
            ident_weight: float, sim_weight: float, generator: torch.Generator) -> Rollouts:
    """Sample `group` rollouts per prompt under the current adapter (no gradient) and score them."""
    rows = [p for p in prompts for _ in range(group)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    with torch.no_grad():
        tokens, mask = sample(applied_lora(model, params, scaling), [p.cut.prefix_ids for p in rows], new_tokens,
                              pad_id=int(pad), eos_id=eos, temperature=temperature, generator=generator)
    texts, truncated = [], []
    for row, m in zip(tokens.tolist(), mask.tolist(), strict=True):
        kept = [t for t, keep in zip(row, m, strict=True) if keep]
        ended = eos is not None and bool(kept) and kept[-1] == eos
        texts.append(tokenizer.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=False))
        truncated.append(not ended)
    total, idr, sim, bad, good = rollout_rewards([p.cut.prefix_text for p in rows], texts,
                                                 [p.reference for p in rows], known, truncated,
                                                 ident_weight, sim_weight)
    return Rollouts(rows, tokens, mask, texts, torch.tensor(total), idr, sim, bad, good)


def rl_loss(model: Any, params: LoraTensors, start: LoraTensors, scaling: float, ro: Rollouts, *, group: int,
            kl_weight: float, pad_id: int) -> tuple[torch.Tensor, dict[str, float]]:
    """REINFORCE with group-relative advantages (per-rollout mean log-prob of its tokens, batch mean) plus
    `kl_weight` * KL(start || current) at the rollouts' positions (full next-token distributions)."""
    prefixes = [p.cut.prefix_ids for p in ro.prompts]
    m = ro.mask
    adv = group_advantages(ro.rewards, group)
    start_logp = None
    if kl_weight > 0:
        with torch.no_grad():
            start_logp = F.log_softmax(completion_logits(applied_lora(model, start, scaling), prefixes, ro.tokens,
                                                         pad_id), -1)
    with torch.enable_grad():
        logp = F.log_softmax(completion_logits(applied_lora(model, params, scaling), prefixes, ro.tokens, pad_id), -1)
        comp = logp.gather(-1, ro.tokens.unsqueeze(-1)).squeeze(-1)  # [N, T]
        seq_logp = (comp * m).sum(1) / m.sum(1).clamp_min(1.0)
        pg = -(adv.detach() * seq_logp).mean()
        loss = pg
        stats = {"pg": float(pg.detach())}
        if start_logp is not None:
            kl_tok = (start_logp.exp() * (start_logp - logp)).sum(-1)
            kl = (kl_tok * m).sum() / m.sum().clamp_min(1.0)
            loss = loss + kl_weight * kl
            stats["kl"] = float(kl.detach())
    return loss, stats
