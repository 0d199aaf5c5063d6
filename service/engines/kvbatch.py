"""A left-padded KV cache for a batch whose rows join and leave between decode steps."""

from __future__ import annotations

import torch
from transformers import DynamicCache


def cache_to_tensors(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values), each [batch, heads, seq, head_dim]."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def tensors_to_cache(tensors: list[tuple[torch.Tensor, torch.Tensor]], config) -> DynamicCache:
    """Build a DynamicCache holding ``tensors`` (through its public ``update``)."""
    cache = DynamicCache(config=config)
    for idx, (k, v) in enumerate(tensors):
        cache.update(k, v, idx)
    return cache


def _left_pad(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class BatchKV:
    """KV cache plus 2-D attention mask for the running rows; padding is always on the left."""

    def __init__(self, config) -> None:
        self.config = config
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # [batch, seq] 1 = real token

    @property
    def size(self) -> int:
        """Number of rows."""
        return 0 if self.mask is None else self.mask.shape[0]

    def append(self, cache: DynamicCache, mask: torch.Tensor) -> None:
        """Add freshly prefilled rows (their own cache and mask) under the existing ones."""
        if self.cache is None:
            self.cache, self.mask = cache, mask
            return
        length = max(self.mask.shape[1], mask.shape[1])
        merged = [
            (torch.cat([_left_pad(k0, length, 2), _left_pad(k1, length, 2)], 0),
             torch.cat([_left_pad(v0, length, 2), _left_pad(v1, length, 2)], 0))
            for (k0, v0), (k1, v1) in zip(cache_to_tensors(self.cache), cache_to_tensors(cache), strict=False)
        ]
        self.mask = torch.cat([_left_pad(self.mask, length, 1), _left_pad(mask, length, 1)], 0)
        self.cache = tensors_to_cache(merged, self.config)

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order) and drop leading columns that are padding everywhere."""
        if not rows:
            self.cache, self.mask = None, None
            return
        index = torch.tensor(rows, dtype=torch.long)
        mask = self.mask.index_select(0, index)
        real = mask.any(dim=0).nonzero()
        first = int(real[0].item()) if len(real) else 0
        self.mask = mask[:, first:]
        self.cache = tensors_to_cache(
            [(k.index_select(0, index)[:, :, first:], v.index_select(0, index)[:, :, first:])
             for k, v in cache_to_tensors(self.cache)],
            self.config,
        )

    def extend_mask(self) -> torch.Tensor:
        """Mask for the next decode step (one more real column for every row)."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        return self.mask
