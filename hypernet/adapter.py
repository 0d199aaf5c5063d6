"""The adapter format, in one place: LoRA adapters in the standard PEFT layout.

Write (atomically, content-addressed by `sha256`), read, validate the config, scaling, pack into / unpack from one
tar blob (what the service's cache stores). The serving engine only turns what `read_lora` returns into slot weights
(`service.engines.lora_slots`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
LEGACY_WEIGHTS_NAME = "adapter_model.bin"  # older PEFT folders; read, never written
_PREFIX = "base_model.model."
_SUFFIXES = {".lora_A.weight": 0, ".lora_B.weight": 1}
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


def _weights_bytes(tensors: LoraTensors, dtype: torch.dtype, extra: dict[str, str] | None) -> bytes:
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
    dtype: torch.dtype | None = None,
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


def validate_config(config: dict) -> dict:
    """Refuse what plain LoRA (the hypernetwork's output, the engine's stacked layers) would silently compute
    differently: another PEFT type, DoRA, fan-in-fan-out, extra saved modules, per-module alpha/rank, biases."""
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterFormatError(f"peft_type {config.get('peft_type')!r} is not LORA")
    unsupported = {"use_dora": bool(config.get("use_dora")), "fan_in_fan_out": bool(config.get("fan_in_fan_out")),
                   "modules_to_save": bool(config.get("modules_to_save")),
                   "alpha_pattern": bool(config.get("alpha_pattern")), "rank_pattern": bool(config.get("rank_pattern")),
                   "bias": config.get("bias", "none") != "none"}
    bad = sorted(k for k, v in unsupported.items() if v)
    if bad:
        raise AdapterFormatError(f"unsupported adapter options: {', '.join(bad)}")
    return config


def scaling(config: dict) -> float:
    """The factor LoRA applies to B @ A: alpha / r (alpha / sqrt(r) with rsLoRA; alpha defaults to r)."""
    r = int(config["r"])
    alpha = float(config.get("lora_alpha", r))
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The flat tensors of an adapter folder (safetensors, or a legacy adapter_model.bin)."""
    path = Path(path)
    st = path / WEIGHTS_NAME
    if st.is_file():
        from safetensors.torch import load

        # one read plus in-memory parsing is ~2x faster than load_file's per-tensor mmap slicing
        return load(st.read_bytes())
    legacy = path / LEGACY_WEIGHTS_NAME
    if legacy.is_file():
        import torch

        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise AdapterFormatError(f"{path} is not an adapter folder: {WEIGHTS_NAME} missing")


def pair_tensors(flat: dict[str, torch.Tensor]) -> LoraTensors:
    """{module path: (A [r, in], B [out, r])} from PEFT's flat names; anything else is refused."""
    pairs: dict[str, list[torch.Tensor | None]] = {}
    for key in sorted(flat):
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        if suffix is None or not key.startswith(_PREFIX):
            raise AdapterFormatError(f"unexpected tensor {key!r} (only lora_A/lora_B of linear layers are served)")
        pairs.setdefault(key[len(_PREFIX) : -len(suffix)], [None, None])[_SUFFIXES[suffix]] = flat[key]
    tensors: LoraTensors = {}
    for module, (a, b) in pairs.items():
        if a is None or b is None or a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise AdapterFormatError(f"{module}: lora_A/lora_B missing or not [r, in] / [out, r]")
        tensors[module] = (a, b)
    return tensors


def read_config(path: Path) -> dict:
    """An adapter folder's `adapter_config.json`."""
    path = Path(path)
    try:
        return json.loads((path / CONFIG_NAME).read_text())
    except FileNotFoundError as exc:
        raise AdapterFormatError(f"{path} is not an adapter folder: {exc.filename} missing") from exc


def read_adapter(path: Path) -> tuple[dict, LoraTensors]:
    """Read an adapter folder back into its config and {module path: (A, B)}."""
    return read_config(path), pair_tensors(load_weights(path))


def read_lora(path: Path) -> tuple[LoraTensors, float]:
    """What serving and scoring need of an adapter folder: its validated (A, B) pairs and its scaling."""
    config = validate_config(read_config(path))
    tensors = pair_tensors(load_weights(path))
    if not tensors:
        raise AdapterFormatError("adapter has no LoRA tensors")
    return tensors, scaling(config)


def pack_adapter(folder: Path) -> bytes:
    """An adapter folder as one uncompressed tar blob (what the cache stores)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(Path(folder).iterdir()):
            tar.add(f, arcname=f.name)
    return buf.getvalue()


def unpack_adapter(data: bytes, dest: Path) -> Path:
    """Restore a packed adapter into `dest` (temp + rename; refuses member paths that escape)."""
    tmp = dest.parent / f".tmp-{dest.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(tmp, filter="data")
    if dest.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return dest
    tmp.rename(dest)
    return dest
