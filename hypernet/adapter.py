"""Write and read LoRA adapters in the standard PEFT layout, atomically and content-addressed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
_PREFIX = "base_model.model."
# Read once at import: os.umask can only be read by setting it, which is not thread-safe later on.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

# module path -> (A [r, in], B [out, r]); the generator's output and the writer's input.
LoraTensors = dict[str, tuple["torch.Tensor", "torch.Tensor"]]


class AdapterFormatError(ValueError):
    """An adapter folder is missing files, or its config and tensors disagree."""


@dataclass(frozen=True)
class AdapterFiles:
    """A written adapter folder and the sha256 over its canonical bytes (config, then weights)."""

    path: Path
    sha256: str
    nbytes: int


def adapter_config(*, base_model: str, target_modules: list[str], r: int, lora_alpha: float) -> dict:
    """The adapter_config.json dict PEFT and vLLM accept for a plain LoRA (bias none, no DoRA)."""
    cfg = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": int(r),
        "lora_alpha": float(lora_alpha),
        "lora_dropout": 0.0,
        "target_modules": sorted(set(target_modules)),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "inference_mode": True,
        "init_lora_weights": True,
    }
    return cfg


def _canonical_json(obj: dict) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode()


def _weights_bytes(tensors: LoraTensors, dtype: "torch.dtype", extra: dict[str, str] | None) -> bytes:
    from hypernet.canonical import canonical_safetensors

    flat = {}
    for path in sorted(tensors):
        a, b = tensors[path]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise AdapterFormatError(f"{path}: A {tuple(a.shape)} and B {tuple(b.shape)} are not [r,in], [out,r]")
        flat[f"{_PREFIX}{path}.lora_A.weight"] = a.detach().to("cpu", dtype).contiguous()
        flat[f"{_PREFIX}{path}.lora_B.weight"] = b.detach().to("cpu", dtype).contiguous()
    # Provenance goes into the safetensors header, not adapter_config.json: strict loaders (vLLM) only
    # accept known config keys, and every loader ignores header metadata.
    metadata = {"format": "pt", **{f"code2lora.{k}": str(v) for k, v in sorted((extra or {}).items())}}
    return canonical_safetensors(flat, metadata)


def write_adapter(
    tensors: LoraTensors,
    out_dir: Path,
    *,
    base_model: str,
    lora_alpha: float,
    dtype: "torch.dtype | None" = None,
    extra: dict[str, str] | None = None,
    content_addressed: bool = True,
) -> AdapterFiles:
    """Write a PEFT adapter atomically; by default into `out_dir/<sha256>/` (existing identical ones are reused)."""
    import torch

    if not tensors:
        raise AdapterFormatError("no LoRA tensors to write")
    ranks = {a.shape[0] for a, _ in tensors.values()}
    if len(ranks) != 1:
        raise AdapterFormatError(f"mixed ranks {sorted(ranks)}: PEFT needs one r (or a rank_pattern)")
    weights = _weights_bytes(tensors, dtype or torch.float32, extra)
    modules = [p.rsplit(".", 1)[-1] for p in tensors]
    config = _canonical_json(
        adapter_config(base_model=base_model, target_modules=modules, r=ranks.pop(), lora_alpha=lora_alpha)
    )
    digest = _hash_parts(config, weights)
    final = Path(out_dir) / digest if content_addressed else Path(out_dir)
    if content_addressed and (final / WEIGHTS_NAME).is_file() and (final / CONFIG_NAME).is_file():
        return AdapterFiles(final, digest, len(config) + len(weights))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp.", dir=final.parent))
    try:
        make_shareable(tmp)
        for name, data in ((CONFIG_NAME, config), (WEIGHTS_NAME, weights)):
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        if final.exists():
            if content_addressed:  # a concurrent writer won the race with the same bytes
                shutil.rmtree(tmp)
                return AdapterFiles(final, digest, len(config) + len(weights))
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return AdapterFiles(final, digest, len(config) + len(weights))


def make_shareable(path: Path) -> None:
    """Give a temp folder or file (0700/0600) the umask's usual permissions: vLLM may read it as another user."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_UMASK)


def _hash_parts(config: bytes, weights: bytes) -> str:
    h = hashlib.sha256()
    for part in (config, weights):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def adapter_sha256(path: Path) -> str:
    """Recompute the content address of an adapter folder (same definition as `write_adapter`)."""
    path = Path(path)
    try:
        return _hash_parts((path / CONFIG_NAME).read_bytes(), (path / WEIGHTS_NAME).read_bytes())
    except FileNotFoundError as exc:
        raise AdapterFormatError(f"{path} is not an adapter folder: {exc.filename} missing") from exc


def read_adapter(path: Path) -> tuple[dict, LoraTensors]:
    """Read an adapter folder back into its config and {module path: (A, B)}."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        config = json.loads((path / CONFIG_NAME).read_text())
        flat = load_file(str(path / WEIGHTS_NAME))
    except FileNotFoundError as exc:
        raise AdapterFormatError(f"{path} is not an adapter folder: {exc.filename} missing") from exc
    tensors: LoraTensors = {}
    for key in sorted(flat):
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[len(_PREFIX) : -len(".lora_A.weight")]
        b_key = f"{_PREFIX}{module}.lora_B.weight"
        if b_key not in flat:
            raise AdapterFormatError(f"{path}: {b_key} missing")
        tensors[module] = (flat[key], flat[b_key])
    if len(tensors) * 2 != len(flat):
        raise AdapterFormatError(f"{path}: unexpected tensors beside lora_A/lora_B pairs")
    return config, tensors
