"""The models this service runs: the base model folder, the hypernetwork checkpoint, the loaded generator.

(Database tables are `service.db.models`.)
"""

from __future__ import annotations

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


def default_checkpoint(settings: Settings) -> Path | None:
    """The configured checkpoint; else the shipped one when serving the bundled model; else None (untrained)."""
    if settings.hypernet_checkpoint is not None:
        return Path(settings.hypernet_checkpoint)
    from hypernet.checkpoint import shipped_checkpoint  # here, not at the top: it loads torch

    shipped = shipped_checkpoint()
    if settings.base_model_path is None and shipped.exists():
        return shipped
    return None


def load_generator(settings: Settings) -> AdapterGenerator:
    """The hypernetwork generator for the configured checkpoint and base model (bundled defaults)."""
    checkpoint = default_checkpoint(settings)
    return _generator(str(checkpoint) if checkpoint else None, str(base_model_dir(settings)))


@lru_cache(maxsize=2)
def _generator(checkpoint: str | None, base: str) -> AdapterGenerator:
    # One per process and configuration: it is read-only after loading, so jobs can share it.
    from hypernet.generator import AdapterGenerator

    return AdapterGenerator.load(checkpoint=checkpoint, base_model_path=base)
