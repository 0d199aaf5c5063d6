"""Stacked multi-LoRA linear layers (Punica / S-LoRA style): every adapter slot in one tensor.

Each wrapped ``nn.Linear`` holds A ``[S, r, in]`` and B transposed, ``[S, r, out]``, for S slots
(slot 0 is "no adapter" and stays all zero). Before a forward pass the caller sets one slot per batch row; the
layer gathers each row's A/B and runs two batched matmuls, so the LoRA cost does not grow with the
number of distinct adapters in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

BASE_SLOT = 0


@dataclass
class RowSlots:
    """Per-row slot indices for the next forward pass, shared by every layer of one model."""

    index: torch.Tensor | None = None  # [batch] long; None = every row is a base row
    active: frozenset[int] = field(default_factory=frozenset)  # non-base slots present in the batch
    single: int | None = None  # the one slot every row uses (plain matmuls, no gather)

    def set(self, slots: Sequence[int], device: torch.device) -> None:
        """Select ``slots[i]`` for batch row i."""
        self.active = frozenset(s for s in slots if s != BASE_SLOT)
        if not self.active:
            self.clear()
            return
        self.single = slots[0] if len(set(slots)) == 1 else None
        self.index = torch.tensor(list(slots), dtype=torch.long, device=device)

    def clear(self) -> None:
        """Back to base-only (every layer returns exactly the base output)."""
        self.index, self.active, self.single = None, frozenset(), None


class StackedLoRALinear(nn.Module):
    """``y = base(x) + (x @ A[slot]^T) @ B[slot]^T`` per row; scaling is folded into B on write.

    B is stored transposed (``lora_Bt`` [S, r, out]): ``baddbmm`` on a contiguous right operand ran
    3-5x faster than on a transposed view of ``[S, out, r]``.
    """

    def __init__(self, base: nn.Linear, rows: RowSlots, num_slots: int, rank: int) -> None:
        super().__init__()
        self.base = base
        self.rows = rows
        self.in_features, self.out_features = base.in_features, base.out_features
        w = base.weight
        self.register_buffer("lora_A", w.new_zeros((num_slots, rank, self.in_features)), persistent=False)
        self.register_buffer("lora_Bt", w.new_zeros((num_slots, rank, self.out_features)), persistent=False)
        self.live: set[int] = set()  # slots with weights in this layer; others are skipped or zero

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (code that inspects ``.weight`` keeps working)."""
        return self.base.weight

    def grow_rank(self, rank: int) -> None:
        """Widen every slot to ``rank``; existing weights are kept, zero-padded."""
        old = self.lora_A.shape[1]
        if rank <= old:
            return
        a = self.lora_A.new_zeros((self.lora_A.shape[0], rank, self.in_features))
        bt = self.lora_Bt.new_zeros((self.lora_Bt.shape[0], rank, self.out_features))
        a[:, :old] = self.lora_A  # zero padding of the rank leaves (x A^T) B^T unchanged
        bt[:, :old] = self.lora_Bt
        self.lora_A, self.lora_Bt = a, bt

    def write(self, slot: int, a: torch.Tensor, b: torch.Tensor, scaling: float) -> None:
        """Copy one adapter's A [r, in] and B [out, r] into ``slot``, zero-padding to the stack's rank."""
        r = a.shape[0]
        lora_a, lora_bt = self.lora_A, self.lora_Bt  # few ops per layer: a hot-load runs this ~200 times
        lora_a[slot, :r].copy_(a)
        torch.mul(b.t(), scaling, out=lora_bt[slot, :r])  # copy and scale in one op
        if r < lora_a.shape[1]:
            lora_a[slot, r:].zero_()
            lora_bt[slot, r:].zero_()
        self.live.add(slot)

    def clear(self, slot: int) -> None:
        """Make ``slot`` a zero delta in this layer (its adapter does not target it)."""
        # always zero: a freed slot leaves ``live`` but keeps its old weights until overwritten
        self.lora_A[slot].zero_()
        self.lora_Bt[slot].zero_()
        self.live.discard(slot)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Base output plus each row's LoRA delta (rows of slot 0 get exactly the base output)."""
        y = self.base(x)
        rows = self.rows
        if self.live.isdisjoint(rows.active):
            return y  # base-only batch, or no adapter in the batch touches this layer
        if rows.single is not None:
            s = rows.single
            h = nn.functional.linear(x, self.lora_A[s]).reshape(-1, self.lora_A.shape[1])
            return torch.addmm(y.reshape(-1, self.out_features), h, self.lora_Bt[s]).reshape(y.shape)
        n = rows.index.shape[0]
        x3 = x.reshape(n, -1, self.in_features)
        a = self.lora_A.index_select(0, rows.index)  # [n, r, in]
        bt = self.lora_Bt.index_select(0, rows.index)  # [n, r, out]
        h = torch.bmm(x3, a.transpose(1, 2))  # [n, seq, r]
        return torch.baddbmm(y.reshape(n, -1, self.out_features), h, bt).reshape(y.shape)
