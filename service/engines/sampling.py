"""Per-row token sampling (greedy, temperature, top-p) with per-request seeded generators."""

from __future__ import annotations

import torch


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator; seeded for reproducibility, else from fresh entropy."""
    gen = torch.Generator(device="cpu")
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed % 2**64)  # any int (seed + choice index, negative seeds) maps into torch's range
    return gen


def sample_token(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
    """Pick one token id from a 1-D logits row."""
    if temperature <= 0.0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if torch.isnan(probs).any():  # a vanishing temperature (e.g. 5e-324) overflows to inf - inf: that is greedy
        return int(torch.argmax(logits).item())
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        drop = cumulative - sorted_probs >= top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    # sampling on CPU keeps a seeded run identical whatever the batch around it
    return int(torch.multinomial(probs.cpu(), 1, generator=gen).item())


def token_logprobs(logits: torch.Tensor, token_id: int, top_k: int) -> tuple[float, list[tuple[int, float]]]:
    """Logprob of ``token_id`` under the raw model distribution, plus the top-k (id, logprob)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    chosen = float(logp[token_id].item())
    if top_k <= 0:
        return chosen, []
    values, ids = torch.topk(logp, min(top_k, logp.shape[-1]))
    return chosen, [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=False)]
