"""AdapterGenerator: base-model signature, encoders and hypernet loaded once; `.generate(ctx, out_dir)` per repo."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hypernet.basemodel import (
    find_targets,
    load_base_model,
    load_config,
    load_input_embeddings,
    load_tokenizer,
    meta_model,
    resolve_model_dir,
)
from hypernet.checkpoint import load_checkpoint, version_id
from hypernet.encoder import ContextEncoder, EncodedContext, TokenEncoder, shared_sentence_encoder
from hypernet.model import Code2LoRAHypernet, HypernetConfig

if TYPE_CHECKING:
    from hypernet.adapter import LoraTensors
    from hypernet.pipeline import AdapterArtifact, ContextLike

log = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class AdapterGenerator:
    """Holds what adapter generation needs; construct with `AdapterGenerator.load`."""

    def __init__(self, hypernet: Code2LoRAHypernet, encoder: ContextEncoder, *, base_model_name: str,
                 trained: bool, adapter_dtype: str = "float32", max_items: int = 256,
                 token_budget: int = 2048) -> None:
        self.hypernet = hypernet.eval()
        self.encoder = encoder
        self.base_model_name = base_model_name
        self.trained = trained
        self.adapter_dtype = _DTYPES[adapter_dtype]
        self.max_items = max_items
        self.token_budget = token_budget
        self.version_id = version_id(hypernet)

    @classmethod
    def load(
        cls,
        checkpoint: Path | str | None = None,
        base_model_path: Path | str | None = None,
        device: str = "cpu",
        *,
        base_model_name: str | None = None,
        seed: int = 0,
        sentence_encoder_path: Path | None = None,
        init_overrides: dict[str, Any] | None = None,
        **options: Any,
    ) -> "AdapterGenerator":
        """Load for a base model folder (default: the prepared bundled one) and a checkpoint (None: fresh zero-B
        hypernet from `seed`, a no-op adapter). Only the base config, tokenizer and embedding matrix are read
        unless the hypernet reads hidden states. `base_model_name` goes into adapter_config.json (default: path).
        """
        model_dir = resolve_model_dir(base_model_path)
        config = load_config(model_dir)
        targets = find_targets(meta_model(config))
        if checkpoint is not None:
            hypernet = load_checkpoint(Path(checkpoint), expect_targets=targets, device=device)
        else:
            with torch.random.fork_rng(devices=[]):  # a fixed init without disturbing the caller's RNG
                torch.manual_seed(seed)
                hypernet = Code2LoRAHypernet(HypernetConfig.for_base(config, targets, **(init_overrides or {})))
            hypernet.to(device)
            log.warning("no hypernet checkpoint: using a fresh zero-B hypernet (seed %d); adapters are no-ops", seed)
        encoder = _build_encoder(hypernet.config, model_dir, device, sentence_encoder_path)
        # A trained checkpoint records the context sizes it was trained with; serve with the same by default.
        for key in ("token_budget", "max_items"):
            if key in hypernet.config.extra and key not in options:
                options[key] = int(hypernet.config.extra[key])
        return cls(hypernet, encoder, base_model_name=base_model_name or str(model_dir.resolve()),
                   trained=checkpoint is not None, **options)

    def lora(self, encoded: EncodedContext) -> "LoraTensors":
        """Generated {module path: (A [r,in], B [out,r])} for one encoded context."""
        device = next(self.hypernet.parameters()).device
        pooled = None if encoded.pooled is None else encoded.pooled.to(device)
        tokens = None if encoded.tokens is None else encoded.tokens.to(device)
        return self.hypernet.generate(pooled, tokens)

    def generate(self, ctx: "ContextLike", out_dir: Path) -> "AdapterArtifact":
        """Encode `ctx`, generate, and write a content-addressed PEFT adapter under `out_dir`."""
        from hypernet.pipeline import generate_adapter

        return generate_adapter(ctx, self, Path(out_dir))


def _build_encoder(config: HypernetConfig, model_dir: Path, device: str, sentence_path: Path | None) -> ContextEncoder:
    sentence = shared_sentence_encoder(sentence_path, device) if config.use_sentence else None
    tokens = None
    if config.use_tokens:
        tokenizer = load_tokenizer(model_dir)
        if config.token_source in ("hidden", "hidden_embed"):
            budget = int(config.extra.get("token_budget", 2048))
            tokens = TokenEncoder(tokenizer, model=load_base_model(model_dir, device=device),
                                  source=config.token_source, layers=config.token_layers, chunk=config.token_chunk,
                                  max_tokens=budget)
        else:
            tokens = TokenEncoder(tokenizer, embeddings=load_input_embeddings(model_dir).to(device))
    return ContextEncoder(sentence, tokens)
