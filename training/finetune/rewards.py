"""Surface-metric rewards for RL: chrF (sacrebleu), exact match, edit similarity."""

from __future__ import annotations

from collections.abc import Callable

from hypernet.rewards import chrf
from training.eval.metrics import levenshtein

__all__ = ["REWARDS", "chrf", "edit_similarity", "exact_match", "first_line", "get_reward", "levenshtein"]


def exact_match(hypothesis: str, reference: str) -> float:
    """1.0 when the stripped strings are equal, else 0.0."""
    return float(hypothesis.strip() == reference.strip())


def edit_similarity(hypothesis: str, reference: str) -> float:
    """1 - Levenshtein / max length (1.0 for two empty strings)."""
    n = max(len(hypothesis), len(reference))
    return 1.0 if n == 0 else 1.0 - levenshtein(hypothesis, reference) / n


def first_line(text: str) -> str:
    """The first non-empty line (line completion compares one line)."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


REWARDS: dict[str, Callable[[str, str], float]] = {
    "chrf": chrf,
    "exact_match": exact_match,
    "edit_sim": edit_similarity,
    "line_exact_match": lambda h, r: exact_match(first_line(h), first_line(r)),
    "line_edit_sim": lambda h, r: edit_similarity(first_line(h), first_line(r)),
}


def get_reward(name: str) -> Callable[[str, str], float]:
    """Reward function by name (chrf, exact_match, edit_sim, line_exact_match, line_edit_sim)."""
    try:
        return REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; choose from {sorted(REWARDS)}") from None
