"""Apply generated LoRA tensors to a frozen base model functionally, so gradients reach the hypernetwork."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from hypernet.adapter import LoraTensors


def lora_delta(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """scale * (x @ A^T) @ B^T; A [r,in] / B [out,r], or per-sample A [N,r,in] / B [N,out,r] with x [N,S,in]."""
    x = x.to(a.dtype)
    return scaling * ((x @ a.transpose(-1, -2)) @ b.transpose(-1, -2))


@contextmanager
def applied_lora(model: nn.Module, tensors: LoraTensors, scaling: float) -> Iterator[nn.Module]:
    """Within the block, every target Linear returns y + scale * (x A^T) B^T; the model itself is untouched.

    Forward hooks (not weight patches) keep the base weights frozen and shared, let A and B carry autograd
    history back into the hypernet, and accept a leading batch dim on A/B for one adapter per sample.
    """
    modules = dict(model.named_modules())
    missing = sorted(p for p in tensors if p not in modules)
    if missing:
        raise KeyError(f"LoRA targets not in the model: {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    handles = []
    try:
        for path, (a, b) in tensors.items():
            module = modules[path]

            def hook(_mod: nn.Module, args: tuple, output: torch.Tensor, a=a, b=b) -> torch.Tensor:
                return output + lora_delta(args[0], a, b, scaling).to(output.dtype)

            handles.append(module.register_forward_hook(hook))
        yield model
    finally:
        for handle in handles:
            handle.remove()
