"""Read a PEFT LoRA folder into plain tensors: module path -> (A [r, in], B [out, r], scaling)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

_PREFIX = "base_model.model."
_SUFFIXES = {".lora_A.weight": 0, ".lora_B.weight": 1}


@dataclass(frozen=True)
class LoraWeights:
    """One adapter's tensors per target module path (relative to the causal LM)."""

    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]]

    @property
    def rank(self) -> int:
        """Largest rank over the modules."""
        return max(a.shape[0] for a, _, _ in self.modules.values())


def _config(folder: Path) -> dict:
    cfg = json.loads((folder / "adapter_config.json").read_text())
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"peft_type {cfg.get('peft_type')!r} is not LORA")
    # the stacked layers implement plain LoRA only; refuse what would silently compute something else
    unsupported = {"use_dora": bool(cfg.get("use_dora")), "fan_in_fan_out": bool(cfg.get("fan_in_fan_out")),
                   "modules_to_save": bool(cfg.get("modules_to_save")), "alpha_pattern": bool(cfg.get("alpha_pattern")),
                   "rank_pattern": bool(cfg.get("rank_pattern")), "bias": cfg.get("bias", "none") != "none"}
    bad = sorted(k for k, v in unsupported.items() if v)
    if bad:
        raise ValueError(f"unsupported adapter options: {', '.join(bad)}")
    return cfg


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    st = folder / "adapter_model.safetensors"
    if st.is_file():
        from safetensors.torch import load

        # one read plus in-memory parsing is ~2x faster than load_file's per-tensor mmap slicing
        return load(st.read_bytes())
    pt = folder / "adapter_model.bin"
    if pt.is_file():
        return torch.load(pt, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"no adapter_model.safetensors in {folder}")


def read_lora(path: str | Path) -> LoraWeights:
    """Parse ``adapter_config.json`` and the weights; raise ValueError/OSError on anything malformed."""
    folder = Path(path)
    cfg = _config(folder)
    r, alpha = int(cfg["r"]), float(cfg.get("lora_alpha", cfg["r"]))
    scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    pairs: dict[str, list[torch.Tensor | None]] = {}
    for key, tensor in _tensors(folder).items():
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        if suffix is None or not key.startswith(_PREFIX):
            raise ValueError(f"unexpected tensor {key!r} (only lora_A/lora_B of linear layers are served)")
        module = key[len(_PREFIX):-len(suffix)]
        pairs.setdefault(module, [None, None])[_SUFFIXES[suffix]] = tensor
    modules = {}
    for module, (a, b) in pairs.items():
        if a is None or b is None or a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(f"{module}: lora_A/lora_B missing or not [r, in] / [out, r]")
        modules[module] = (a, b, scaling)
    if not modules:
        raise ValueError("adapter has no LoRA tensors")
    return LoraWeights(modules)
