"""Metrics: exact match, edit similarity, bootstrap intervals (plain, paired, clustered), adapter cosines."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def normalise(text: str) -> str:
    """Whitespace-insensitive form used by exact match (runs of whitespace -> one space, ends stripped)."""
    return " ".join(text.split())


def exact_match(pred: str, target: str) -> float:
    """1.0 when prediction and target agree up to whitespace."""
    return float(normalise(pred) == normalise(target))


def levenshtein(a: str, b: str) -> int:
    """Character edit distance (insert / delete / substitute, cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_similarity(pred: str, target: str) -> float:
    """1 - edit distance / max length (RepoBench / CrossCodeEval); 1.0 for two empty strings."""
    p, t = pred.strip(), target.strip()
    if not p and not t:
        return 1.0
    return 1.0 - levenshtein(p, t) / max(len(p), len(t))


def bootstrap_ci(values: Sequence[float], *, groups: Sequence[str] | None = None, n: int = 2000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, lo, hi): percentile bootstrap of the mean; with `groups`, whole groups are resampled (cluster
    bootstrap, e.g. by repository) and the mean is over all values of the drawn groups."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    if groups is None:
        idx = rng.integers(0, x.size, size=(n, x.size))
        means = x[idx].mean(axis=1)
    else:
        labels = np.asarray(groups)
        uniq = sorted(set(labels.tolist()))
        sums = np.array([x[labels == g].sum() for g in uniq])
        counts = np.array([(labels == g).sum() for g in uniq])
        idx = rng.integers(0, len(uniq), size=(n, len(uniq)))
        means = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (float(x.mean()), float(lo), float(hi))


def paired_diff_ci(a: Sequence[float], b: Sequence[float], **kwargs) -> tuple[float, float, float]:
    """Bootstrap interval of mean(a - b) over paired observations (same sequences, two arms)."""
    if len(a) != len(b):
        raise ValueError("paired samples differ in length")
    return bootstrap_ci([x - y for x, y in zip(a, b)], **kwargs)


def excludes_zero(ci: tuple[float, float, float]) -> bool:
    """True when the interval lies strictly on one side of zero."""
    return (ci[1] > 0 and ci[2] > 0) or (ci[1] < 0 and ci[2] < 0)


def delta_inner(x: dict, y: dict) -> float:
    """<B_x A_x, B_y A_y> summed over modules, without forming the products: sum((Bx^T By) * (Ax Ay^T))."""
    total = 0.0
    for path, (ax, bx) in x.items():
        ay, by = y[path]
        total += float(((bx.double().T @ by.double()) * (ax.double() @ ay.double().T)).sum())
    return total


def delta_cosine_matrix(adapters: list[dict]) -> np.ndarray:
    """Cosine similarity between the weight updates (Delta W = B A, all modules) of each pair of adapters."""
    n = len(adapters)
    gram = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            gram[i, j] = gram[j, i] = delta_inner(adapters[i], adapters[j])
    norms = np.sqrt(np.clip(np.diag(gram), 1e-30, None))
    return gram / norms[:, None] / norms[None, :]


def param_cosine_matrix(adapters: list[dict]) -> np.ndarray:
    """Cosine similarity between the flattened (A, B) parameters (what the Code2LoRA audit measured)."""
    flat = torch.stack([torch.cat([torch.cat([a.flatten(), b.flatten()]) for a, b in (ad[p] for p in sorted(ad))])
                        for ad in adapters]).double()
    flat = torch.nn.functional.normalize(flat, dim=1)
    return (flat @ flat.T).numpy()


def mean_offdiag(m: np.ndarray) -> float:
    """Mean of the off-diagonal entries."""
    n = m.shape[0]
    if n < 2:
        return math.nan
    return float((m.sum() - np.trace(m)) / (n * n - n))


def average_adapter(adapters: list[dict]) -> dict:
    """The functional average: B_avg A_avg = mean_i B_i A_i exactly, by stacking ranks (A) and scaling B by 1/N."""
    n = len(adapters)
    return {p: (torch.cat([ad[p][0] for ad in adapters], dim=0), torch.cat([ad[p][1] for ad in adapters], dim=1) / n)
            for p in adapters[0]}
