"""An adapter folder as slot weights: module path -> (A [r, in], B [out, r], scaling).

Reading, validating and scaling are the format's (`hypernet.adapter.read_lora`); this is only their engine-side shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from hypernet.adapter import read_lora


@dataclass(frozen=True)
class LoraWeights:
    """One adapter's tensors per target module path (relative to the causal LM)."""

    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]]

    @property
    def rank(self) -> int:
        """Largest rank over the modules."""
        return max(a.shape[0] for a, _, _ in self.modules.values())


def slot_weights(path: str | Path) -> LoraWeights:
    """The adapter at `path` as slot weights; raise ValueError (AdapterFormatError) or OSError when malformed."""
    tensors, scale = read_lora(Path(path))
    return LoraWeights({module: (a, b, scale) for module, (a, b) in tensors.items()})
