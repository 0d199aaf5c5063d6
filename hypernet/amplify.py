"""Adapter arithmetic: the functional average of adapters, and the repository-specific part amplified.

Generated adapters of different repositories are nearly parallel (mean ΔW cosine ~0.95): most of each is a
shared "code" direction, and what carries the repository is a small difference from the others. Amplifying it,
ΔW = ΔW_ref + α (ΔW_own − ΔW_ref), is an inference-time knob that needs no training; α = 1 is the adapter itself.

Both are exact in LoRA form (ΔW = B A) by stacking ranks, so the result is an ordinary LoRA of a larger rank;
`compress` brings it back to a given rank with a truncated SVD when an engine caps the rank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from hypernet.adapter import LoraTensors


def average_adapter(adapters: list[LoraTensors]) -> LoraTensors:
    """The functional average: B_avg A_avg = mean_i B_i A_i exactly, by stacking ranks (A) and scaling B by 1/N."""
    n = len(adapters)
    if n == 0:
        raise ValueError("no adapters to average")
    return {p: (torch.cat([ad[p][0] for ad in adapters], dim=0), torch.cat([ad[p][1] for ad in adapters], dim=1) / n)
            for p in adapters[0]}


def amplify(own: LoraTensors, ref: LoraTensors, alpha: float) -> LoraTensors:
    """ref + alpha (own − ref), exactly: A = [A_own; A_ref], B = [alpha B_own, (1 − alpha) B_ref].

    Both adapters must have the same modules and the same LoRA scaling (scaling multiplies the whole ΔW)."""
    if set(own) != set(ref):
        raise ValueError("the adapters target different modules")
    if alpha == 1.0:
        return dict(own)
    return {p: (torch.cat([a, ref[p][0].to(a.dtype)], dim=0),
                torch.cat([alpha * b, (1.0 - alpha) * ref[p][1].to(b.dtype)], dim=1))
            for p, (a, b) in own.items()}


def compress(tensors: LoraTensors, rank: int) -> LoraTensors:
    """The best rank-`rank` approximation of each module's B A (truncated SVD), split as B = U S^½, A = S^½ Vᵀ."""
    out: LoraTensors = {}
    for p, (a, b) in tensors.items():
        if a.shape[0] <= rank:
            out[p] = (a, b)
            continue
        # B A = (Qb Rb)(Ra' Qa')ᵀ: the SVD of the small r×r core avoids forming the out×in matrix.
        qb, rb = torch.linalg.qr(b.float())
        qa, ra = torch.linalg.qr(a.float().T)
        u, s, vh = torch.linalg.svd(rb @ ra.T)
        root = s[:rank].sqrt()
        new_b = (qb @ u[:, :rank]) * root
        new_a = root[:, None] * (vh[:rank] @ qa.T)
        out[p] = (new_a.to(a.dtype), new_b.to(b.dtype))
    return out
