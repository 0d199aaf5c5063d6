"""Sampling completions and scoring them: moved down to `hypernet.rollout` (the RL refinement uses them too);
re-exported here for the fine-tuning trainers."""

from hypernet.rollout import (
    PrefixCache,
    completion_logits,
    left_pad,
    prefix_cache,
    sample,
    token_logps,
)

__all__ = ["PrefixCache", "completion_logits", "left_pad", "prefix_cache", "sample", "token_logps"]
