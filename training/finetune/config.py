"""Config of a fine-tuning run (JSON file): student, teacher, task, method and its knobs, budget."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hypernet.dataconfig import from_dict

METHODS = ("sft", "opd", "tropd", "rl")


@dataclass
class StudentConfig:
    """The model being trained: a base causal LM (None = the bundled one) with a LoRA, or its own weights."""

    base_model: str | None = None
    trainable: str = "lora"  # "lora" | "full" (the target Linear weights themselves)
    rank: int = 8
    lora_alpha: float = 16.0
    modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj"])
    layers: int | None = None  # adapt only the top N decoder layers (None: all)
    init_adapter: str | None = None  # start from this PEFT adapter (e.g. the repository's generated adapter)


@dataclass
class TeacherConfig:
    """The teacher: a model (None = the student's base), optionally with an adapter and the repository context."""

    model: str | None = None
    adapter: str | None = None
    # True: the teacher carries the student's starting adapter (`student.init_adapter`), i.e. the teacher is the
    # starting student *with* the context: context distillation in its classic form.
    student_adapter: bool = False
    context: bool = True  # prepend the repository's rendered API text to every teacher prompt
    context_tokens: int = 384


@dataclass
class TaskConfig:
    """Where prompts and held-out text come from: a repository folder, a repository of the hypernet's corpus, or
    given texts."""

    kind: str = "repo"  # "repo" | "corpus" | "texts"
    repo: str | None = None  # "repo": a folder; "corpus": a corpus repository name such as "pypi/requests"
    # "corpus": the hypernet training config whose corpus (cached) holds `repo`; its context/target split and
    # held-out chunks are then exactly the eval harness's (`code2lora eval`).
    train_config: str | None = None
    texts: list[str] = field(default_factory=list)
    eval_texts: list[str] = field(default_factory=list)
    context_text: str = ""  # "texts" kind: the teacher's context
    prompt_tokens: int = 64
    completion_tokens: int = 32
    n_prompts: int = 64
    seq_len: int = 128  # held-out chunk length
    eval_chunks: int = 8
    seed: int = 0


@dataclass
class OPDConfig:
    """OPD variants: sampled-token (default), full-vocabulary or top-k reverse KL; token sparsity; off-policy share."""

    # "sampled" | "full" | "topk" (reverse KL), or "forward": the full forward KL (teacher soft targets) at the
    # student-visited positions, the mass-covering divergence of generalized on-policy distillation (GKD)
    form: str = "sampled"
    top_k: int = 32
    token_keep: float = 1.0  # share of completion tokens that carry gradient (random subset)
    # share of completion tokens that carry gradient, chosen by credit: the tokens with the largest teacher/student
    # disagreement (|log p_T - log p_old| for the sampled form, the per-position reverse KL for full / top-k)
    focus: float = 1.0
    # what "most disputed" means for `focus`: "disagreement" (above) or "certainty", the drop in entropy from the
    # rollout policy to the teacher (H_old - H_T): positions where the context makes the teacher surer
    focus_by: str = "disagreement"
    offpolicy_share: float = 0.0  # share of rollouts sampled by the teacher (truncated importance weights)
    is_cap: float = 2.0  # cap of per-token importance weights min(pi_old / pi_T, cap)

    def __post_init__(self) -> None:
        if self.form not in ("sampled", "full", "topk", "forward"):
            raise ValueError(f"opd.form must be sampled, full, topk or forward, not {self.form!r}")
        if self.focus_by not in ("disagreement", "certainty"):
            raise ValueError(f"opd.focus_by must be disagreement or certainty, not {self.focus_by!r}")
        if not 0.0 < self.focus <= 1.0:
            raise ValueError(f"opd.focus must be in (0, 1], not {self.focus}")


@dataclass
class TrOPDConfig:
    """Trust region (ratio clip, KL to the previous policy), outlier handling, teacher-prefix guidance."""

    clip_eps: float = 0.2
    kl_coef: float = 0.05
    outlier_z: float = 3.0
    outlier_mode: str = "clip"  # "clip" | "mask" | "downweight" | "none"
    guide_share: float = 0.25  # share of rollouts whose first `guide_tokens` tokens the teacher writes
    guide_tokens: int = 8
    guide_coef: float = 1.0  # weight of the forward-KL term on teacher-written tokens
    guide_top_k: int = 32


@dataclass
class RLConfig:
    """GRPO with a surface-metric reward against the reference continuation; optional OPD term (mixed)."""

    group_size: int = 4
    reward: str = "chrf"
    clip_eps: float = 0.2
    beta: float = 0.0  # k3 KL to the starting policy (LoRA students only)
    norm: str = "grpo"
    scale_rewards: bool = True
    rl_weight: float = 1.0
    opd_weight: float = 0.0  # > 0: mixed OPD + RL advantage


@dataclass
class SFTConfig:
    """SFT data: completions sampled by the teacher, or the repository's own continuation (next-token objective)."""

    source: str = "teacher"  # "teacher" | "text"
    # soft targets: forward KL to the teacher's distribution at each position of the SFT text instead of the
    # cross-entropy of its tokens (with source "text": word-level distillation on the repository's own text)
    soft: bool = False


@dataclass
class FinetuneConfig:
    """Everything a run needs; `method` picks the loss."""

    method: str = "opd"
    name: str = "run"
    out_dir: str = "runs/finetune"
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    opd: OPDConfig = field(default_factory=OPDConfig)
    tropd: TrOPDConfig = field(default_factory=TrOPDConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    steps: int = 30
    batch_size: int = 8  # sampled completions per step (RL: batch_size // group_size prompts)
    inner_steps: int = 2  # optimizer steps per rollout batch (>1 makes the ratio / trust region matter)
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    temperature: float = 1.0
    save_every: int = 5
    eval_every: int = 10
    seed: int = 0
    threads: int = 2
    progress: bool = True
    # "cpu" or a CUDA device ("cuda", "cuda:1"): models, LoRA, rollouts and metrics all live there
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', not {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def config_from_dict(data: dict[str, Any], **overrides: Any) -> FinetuneConfig:
    """Build a config from a (nested) dict; `overrides` (non-None values) replace top-level keys."""
    merged = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return from_dict(FinetuneConfig, merged)


def load_config(path: Path | str, **overrides: Any) -> FinetuneConfig:
    """Read a JSON config file; `overrides` (non-None values) replace top-level keys such as method or steps."""
    return config_from_dict(json.loads(Path(path).read_text()), **overrides)
