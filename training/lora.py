"""A trainable LoRA (one (A, B) pair per target module), shared by hypernetwork training and fine-tuning."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from hypernet.basemodel import TargetModule


class LoraParams(nn.Module):
    """One trainable (A [r, in], B [out, r]) pair per target; PEFT init (A uniform +-1/sqrt(in), B = 0)."""

    def __init__(self, targets: list[TargetModule], rank: int, lora_alpha: float, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.paths = [t.path for t in targets]
        self.rank, self.lora_alpha = rank, lora_alpha
        self.a = nn.ParameterList(
            nn.Parameter((torch.rand(rank, t.in_features, generator=g) * 2 - 1) / math.sqrt(t.in_features))
            for t in targets)
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(t.out_features, rank)) for t in targets)

    @property
    def scaling(self) -> float:
        """alpha / r."""
        return self.lora_alpha / self.rank

    def tensors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{path: (A, B)} carrying gradients."""
        return {p: (a, b) for p, a, b in zip(self.paths, self.a, self.b, strict=False)}

    def load_adapter(self, path: Path | str) -> None:
        """Copy A and B from a PEFT adapter folder (same targets and rank; its alpha replaces ours)."""
        from hypernet.adapter import read_adapter

        config, tensors = read_adapter(Path(path))
        extra = sorted(set(tensors) - set(self.paths))
        if extra:  # silently dropping part of the starting adapter would start from a different model
            raise ValueError(f"adapter has modules the student does not train ({extra[0]} ...): match its layers")
        if int(config["r"]) != self.rank:
            raise ValueError(f"adapter rank {config['r']} != student rank {self.rank}")
        self.lora_alpha = float(config["lora_alpha"])
        with torch.no_grad():
            for p, a, b in zip(self.paths, self.a, self.b, strict=False):
                if p in tensors:
                    a.copy_(tensors[p][0].float())
                    b.copy_(tensors[p][1].float())
