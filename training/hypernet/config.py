"""Training configuration (a JSON file; unknown keys are an error)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hypernet.dataconfig import from_dict
from hypernet.model import HypernetArch
from training.data.corpus import CorpusConfig


@dataclass
class TrainConfig:
    """One training run; `arm` picks what is trained: the hypernet, or one shared LoRA (a control)."""

    name: str = "run"
    arm: str = "hypernet"  # "hypernet" | "shared_lora"
    base_model: str | None = None  # HF folder; None = the prepared bundled SmolLM2
    out_dir: str = "training/checkpoints/run"
    work_dir: str = "~/.cache/code2lora/training"  # corpus, encodings, bottom states, resume state
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    adapt_layers: int = 6  # adapters target the top N decoder layers (0 = all)
    hypernet: HypernetArch = field(default_factory=HypernetArch)  # rank, alpha, widths; the shared LoRA reads rank, alpha
    steps: int = 300
    batch_size: int = 4  # sequences per step, each from a different repository when possible
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 20
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ident_weight: float = 3.0  # loss weight of tokens of identifiers defined in the repository
    contrastive_weight: float = 0.0  # hinge on identifier loss: own adapter must beat another repo's by a margin
    contrastive_margin: float = 0.1
    context_dropout: float = 0.0  # share of context tokens hidden from the hypernet per training step
    context_chunks_per_repo: int = 0  # chunks of a training repository's own context files added to its rows
    # Held-out-file chunks kept per training repository (best-ranked first; 0 = all the corpus has). Cuts the
    # bottom-state cost of a wide corpus without rebuilding it: many repositories matter more than many chunks.
    train_chunks_per_repo: int = 0
    other_positions: float = 0.5  # share of non-identifier positions scored per step (saves LM-head compute)
    amp: bool = False  # bf16 autocast; only worth it on CPUs with native bf16 (AVX512-BF16/AMX)
    eval_every: int = 50
    save_every: int = 25
    val_chunks_per_repo: int = 2
    seed: int = 0
    threads: int = 2
    progress: bool = True
    device: str = "cpu"  # or "cuda[:N]": base model, hypernet and batches live there; cached states stay in RAM

    def __post_init__(self) -> None:
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', not {self.device!r}")

    @property
    def work_path(self) -> Path:
        """`work_dir` with ~ expanded."""
        return Path(self.work_dir).expanduser()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict (the corpus and the hypernet from nested dicts); unknown keys raise."""
        return from_dict(cls, d)


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a JSON training config; `overrides` (non-None) replace top-level keys."""
    data = json.loads(Path(path).read_text())
    data.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(data)
