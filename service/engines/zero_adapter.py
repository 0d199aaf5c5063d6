"""An all-zero LoRA for a base model (lets a LoRA-only batch serve "no adapter" rows exactly) and a random probe
LoRA (shows whether vLLM changes base rows batched with LoRA rows)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file


def write_zero_adapter(base_model_dir: str | Path, out_dir: str | Path, rank: int = 1) -> Path:
    """Write a PEFT folder whose q/v LoRA deltas are exactly zero (Llama-style config.json)."""
    return _write_qv_adapter(base_model_dir, out_dir, rank, std=0.0)


def write_probe_adapter(base_model_dir: str | Path, out_dir: str | Path, rank: int = 8, std: float = 0.05,
                        seed: int = 0) -> Path:
    """Write a PEFT folder with random q/v deltas (seeded): an adapter that visibly changes the output, for probing
    how vLLM batches base rows with LoRA rows (`VllmEngine.probe_base_batching`)."""
    return _write_qv_adapter(base_model_dir, out_dir, rank, std=std, seed=seed)


def _write_qv_adapter(base_model_dir: str | Path, out_dir: str | Path, rank: int, std: float, seed: int = 0) -> Path:
    out = Path(out_dir)
    if (out / "adapter_model.safetensors").exists():
        return out
    cfg = json.loads((Path(base_model_dir) / "config.json").read_text())
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    shapes = {"q_proj": heads * head_dim, "v_proj": kv_heads * head_dim}
    tensors = {}
    gen = torch.Generator().manual_seed(seed)
    for layer in range(int(cfg["num_hidden_layers"])):
        for module, out_features in shapes.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            if std == 0.0:  # exact zeros
                tensors[f"{prefix}.lora_A.weight"] = torch.zeros(rank, hidden)
                tensors[f"{prefix}.lora_B.weight"] = torch.zeros(out_features, rank)
            else:
                tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden, generator=gen) * std
                tensors[f"{prefix}.lora_B.weight"] = torch.randn(out_features, rank, generator=gen) * std
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank,
        "target_modules": sorted(shapes), "lora_dropout": 0.0, "bias": "none", "use_dora": False,
        "use_rslora": False, "fan_in_fan_out": False, "modules_to_save": None,
        "base_model_name_or_path": str(base_model_dir),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=1))
    save_file(tensors, str(tmp / "adapter_model.safetensors"))
    try:
        os.replace(tmp, out)  # atomic: a half-written folder never carries the final name
    except OSError:
        if not (out / "adapter_model.safetensors").exists():
            raise
    return out
