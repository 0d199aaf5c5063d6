"""A frozen causal LM cut in two: bottom layers without LoRA (computed once, cached), top layers with LoRA.

Adapters target only the top `n` decoder layers, so the hidden states entering them do not depend on the
adapter. Training and evaluation compute those states once per sequence and reuse them for every step and
every arm; on a CPU that is the difference between minutes and hours. The context encoder uses the bottom
half alone: the hidden states of the first k layers over the repository's rendered context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from hypernet.basemodel import TargetModule


def top_targets(model: nn.Module, n_layers: int) -> list[TargetModule]:
    """LoRA target modules of the top `n_layers` decoder layers (all layers when n_layers <= 0)."""
    from hypernet.basemodel import find_targets

    targets = find_targets(model)
    total = 1 + max(t.layer for t in targets)
    first = 0 if n_layers <= 0 else max(total - n_layers, 0)
    return [t for t in targets if t.layer >= first]


class SplitLM:
    """`bottom(ids)` -> hidden entering layer `first`; `top(h)` -> final normed hidden; `logits(hidden)`."""

    def __init__(self, model: nn.Module, first_layer: int) -> None:
        self.model = model.eval().requires_grad_(False)
        self.inner = model.model
        self.first = first_layer
        self.layers = list(self.inner.layers)

    def _mask_and_rope(self, h: torch.Tensor) -> tuple[object, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        from transformers.masking_utils import create_causal_mask

        pos = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
        # positional: the 4th parameter is `cache` on transformers 5.24 and `past_key_values` on 5.17
        mask = create_causal_mask(self.model.config, h, None, None, position_ids=pos)
        return mask, self.inner.rotary_emb(h, position_ids=pos), pos

    def _run(self, h: torch.Tensor, layers: list[nn.Module]) -> torch.Tensor:
        mask, rope, pos = self._mask_and_rope(h)
        for layer in layers:
            out = layer(h, attention_mask=mask, position_embeddings=rope, position_ids=pos)
            h = out[0] if isinstance(out, tuple) else out
        return h

    @torch.no_grad()
    def bottom(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, S] token ids (no padding) -> [B, S, hidden] float32 states entering the first adapted layer."""
        h = self.inner.embed_tokens(ids)
        return self._run(h, self.layers[: self.first]).float()

    def top(self, h: torch.Tensor) -> torch.Tensor:
        """Run the adapted layers (hooks applied by the caller) and the final norm."""
        dtype = next(self.model.parameters()).dtype
        return self.inner.norm(self._run(h.to(dtype), self.layers[self.first :]))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head over (selected) final hidden states, float32."""
        return self.model.lm_head(hidden).float()
