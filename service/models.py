"""The models this service runs: the base model folder, the hypernetwork checkpoint, the loaded generator.

(Database tables are `service.db.models`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from service.settings import Settings

if TYPE_CHECKING:
    from hypernet.generator import AdapterGenerator


def base_model_dir(settings: Settings) -> Path:
    """The base model folder the engine, the generator and scoring load (the prepared bundled model by default)."""
    if settings.base_model_path:
        return Path(settings.base_model_path)
    from hypernet.basemodel import prepare_bundled

    return prepare_bundled(settings.model_cache)


class ModelMismatch(RuntimeError):
    """The hypernetwork checkpoint does not fit the base model: the service refuses to start."""


@dataclass(frozen=True)
class AdapterPlan:
    """What the generator will run: a checkpoint that fits the base model, or none with the reason adapters are off
    (every adapter then a no-op, which `/healthz`, `/v1/models` and the dashboard report)."""

    checkpoint: Path | None
    off: str | None = None


def _misfit(checkpoint: Path, settings: Settings) -> str | None:
    """Why `checkpoint` cannot write adapters for the configured base model, or None when it fits."""
    if settings.base_model_path is None and checkpoint == _shipped():
        return None  # the shipped checkpoint was trained for the bundled model (no need to prepare it here)
    return _fit_problem(str(checkpoint), str(base_model_dir(settings)))


@lru_cache(maxsize=8)
def _fit_problem(checkpoint: str, model_dir: str) -> str | None:
    from hypernet.checkpoint import CheckpointError, check_fit

    try:
        check_fit(Path(checkpoint), Path(model_dir))
    except CheckpointError as exc:
        return str(exc)
    return None


def _shipped() -> Path:
    from hypernet.checkpoint import shipped_checkpoint  # here, not at the top: it loads torch

    return shipped_checkpoint()


def plan_adapters(settings: Settings) -> AdapterPlan:
    """The configured checkpoint, else the shipped one, checked against the base model.

    A checkpoint that does not fit raises ModelMismatch (the service refuses to start), unless
    `allow_adapters_off` is set: then no checkpoint, and `off` says why.
    """
    if settings.hypernet_checkpoint is not None:
        checkpoint = Path(settings.hypernet_checkpoint)
        source = f"the hypernetwork checkpoint {checkpoint} (CODE2LORA_HYPERNET_CHECKPOINT)"
    else:
        checkpoint = _shipped()
        source = f"the shipped hypernetwork checkpoint ({checkpoint.parent.name})"
    problem = _misfit(checkpoint, settings)
    if problem is None:
        return AdapterPlan(checkpoint)
    base = settings.base_model_path or "the bundled model"
    message = (f"{source} does not fit the base model {base}: {problem}. Every adapter would be a no-op. Set "
               "CODE2LORA_HYPERNET_CHECKPOINT to a checkpoint trained for this base model, or "
               "CODE2LORA_ALLOW_ADAPTERS_OFF=true to serve it with adapters switched off.")
    if not settings.allow_adapters_off:
        raise ModelMismatch(message)
    return AdapterPlan(None, message)


def default_checkpoint(settings: Settings) -> Path | None:
    """The configured checkpoint (checked against the base model when it is loaded, `plan_adapters`); else the
    shipped one when it fits the base model; else None."""
    if settings.hypernet_checkpoint is not None:
        return Path(settings.hypernet_checkpoint)
    try:
        return plan_adapters(settings).checkpoint
    except ModelMismatch:
        return None


def load_generator(settings: Settings) -> AdapterGenerator:
    """The hypernetwork generator for the planned checkpoint and the base model (bundled defaults); raises
    ModelMismatch when the checkpoint does not fit and adapters may not be switched off."""
    checkpoint = plan_adapters(settings).checkpoint
    return _generator(str(checkpoint) if checkpoint else None, str(base_model_dir(settings)))


@lru_cache(maxsize=2)
def _generator(checkpoint: str | None, base: str) -> AdapterGenerator:
    # One per process and configuration: it is read-only after loading, so jobs can share it.
    from hypernet.generator import AdapterGenerator

    return AdapterGenerator.load(checkpoint=checkpoint, base_model_path=base)
