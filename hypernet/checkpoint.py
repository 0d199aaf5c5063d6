"""Versioned hypernet checkpoints: one safetensors file = config + weights + content hash (the version id)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hypernet.model import Code2LoRAHypernet, HypernetConfig

if TYPE_CHECKING:
    from hypernet.basemodel import TargetModule

FORMAT = "code2lora-hypernet"
FORMAT_VERSION = 1

# Checkpoints shipped with the package: hypernet/checkpoints/<name>/hypernet.safetensors (+ VERSION, its version id,
# and the training config). To ship a new default, add its folder and change this name; the training run's own folder
# (training/checkpoints/<name>/) keeps the log and the evaluation reports.
DEFAULT_SHIPPED = "smollm2-135m-v2-top4"
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"


def shipped_checkpoint(name: str | None = None) -> Path:
    """The weights file of a checkpoint shipped with the package (default: `DEFAULT_SHIPPED`), which the service
    serves with the bundled base model and training starts from or compares against."""
    return SHIPPED_DIR / (name or DEFAULT_SHIPPED) / "hypernet.safetensors"


class CheckpointError(ValueError):
    """A hypernet checkpoint is unreadable, corrupted, or of an unknown format."""


class CheckpointMismatchError(CheckpointError):
    """A hypernet checkpoint was built for a base model of another shape."""


def _canonical_config(config: HypernetConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))


def content_hash(config: HypernetConfig, state: dict[str, torch.Tensor]) -> str:
    """sha256 over the canonical config and every tensor (name, dtype, shape, bytes), in name order."""
    h = hashlib.sha256(f"{FORMAT}/{FORMAT_VERSION}\n".encode())
    h.update(_canonical_config(config).encode())
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"\n{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def version_id(model: Code2LoRAHypernet) -> str:
    """The hypernet version id used in adapter cache keys: `hn-` + 20 hex of the content hash."""
    return "hn-" + content_hash(model.config, model.state_dict())[:20]


def save_checkpoint(model: Code2LoRAHypernet, path: Path) -> str:
    """Write `model` atomically to one safetensors file; return its version id."""
    from hypernet.canonical import canonical_safetensors

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    digest = content_hash(model.config, state)
    data = canonical_safetensors(
        state,
        {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "config": _canonical_config(model.config),
            "content_sha256": digest,
        },
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return "hn-" + digest[:20]


def load_checkpoint(
    path: Path, expect_targets: list[TargetModule] | None = None, device: str = "cpu"
) -> Code2LoRAHypernet:
    """Load and verify a checkpoint; with `expect_targets`, refuse one built for another base model shape."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except FileNotFoundError as exc:
        raise CheckpointError(f"hypernet checkpoint not found: {path}") from exc
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"hypernet checkpoint {path} is unreadable (truncated or not safetensors): {exc}") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a code2lora hypernet checkpoint (format={meta.get('format')!r})")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')} unsupported (want {FORMAT_VERSION})")
    try:
        config = HypernetConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError) as exc:  # ValueError: bad JSON or unknown config keys
        raise CheckpointError(f"{path}: checkpoint config is missing or invalid: {exc}") from exc
    if content_hash(config, state) != meta.get("content_sha256"):
        raise CheckpointError(f"{path}: content hash mismatch, the checkpoint is corrupted")
    if expect_targets is not None:
        check_targets(config, expect_targets, where=str(path))
    model = Code2LoRAHypernet(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored config: {exc}") from exc
    return model.to(device).eval()


def read_config(path: Path) -> HypernetConfig:
    """The config a checkpoint was saved with, from its metadata alone (no weights read); CheckpointError if it is
    missing, unreadable or not a code2lora checkpoint."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError as exc:
        raise CheckpointError(f"hypernet checkpoint not found: {path}") from exc
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"hypernet checkpoint {path} is unreadable: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a code2lora hypernet checkpoint (format={meta.get('format')!r})")
    try:
        return HypernetConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint config is missing or invalid: {exc}") from exc


def check_fit(path: Path, model_dir: Path) -> None:
    """Raise CheckpointError (CheckpointMismatchError when the shapes differ) unless the checkpoint at `path` can
    write adapters for the base model in `model_dir`. Reads the checkpoint's metadata and the base model's config."""
    from hypernet.basemodel import BaseModelError, find_targets, load_config, meta_model

    config = read_config(Path(path))
    try:
        base_config = load_config(model_dir)
    except (BaseModelError, OSError, ValueError) as exc:
        raise CheckpointError(f"base model {model_dir} has no readable config: {exc}") from exc
    check_targets(config, find_targets(meta_model(base_config)), where=str(path))


def check_targets(config: HypernetConfig, targets: list[TargetModule], where: str = "hypernet") -> None:
    """Raise `CheckpointMismatchError` unless `targets` equal the modules the hypernet was built for."""
    have = [[t.path, t.module_type, t.layer, t.in_features, t.out_features] for t in targets]
    if have == config.targets:
        return
    # A hypernet may adapt only some layers (e.g. the top ones): accept it when the base model has the same
    # depth and width and every module the hypernet writes exists here with the same shape.
    depth = 1 + max((t.layer for t in targets), default=-1)
    if config.targets and depth == config.num_layers and all(row in have for row in config.targets):
        return
    want_layers = config.num_layers
    got_layers = 1 + max((t.layer for t in targets), default=-1)
    diff = next(((w, g) for w, g in zip(config.targets, have, strict=False) if w != g), None)
    raise CheckpointMismatchError(
        f"{where} was built for a {config.base_model_type} base with {want_layers} layers, hidden "
        f"{config.hidden_size} and {len(config.targets)} target modules; this base model has {got_layers} layers "
        f"and {len(have)} target modules" + (f"; first difference: want {diff[0]}, got {diff[1]}" if diff else "")
    )
