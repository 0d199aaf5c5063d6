"""Metrics: exact match, edit similarity, bootstrap intervals (plain, paired, clustered), adapter cosines."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from hypernet.metrics.text import edit_similarity, exact_match, levenshtein, normalise  # noqa: F401  (re-exported)


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
    return bootstrap_ci([x - y for x, y in zip(a, b, strict=False)], **kwargs)


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


