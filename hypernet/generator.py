"""AdapterGenerator: base-model signature, encoders and hypernet loaded once; `.generate(ctx, out_dir)` per repo.

The one generation path: a mode produces an `EncodedContext` (static: `encode(ctx)`; evolving:
`hypernet.evolve.encode_state`), then `generate_from` runs the forward pass, writes the adapter and times both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hypernet.adapter import write_adapter
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
from hypernet.pipeline import AdapterArtifact, ContextLike

if TYPE_CHECKING:
    from hypernet.adapter import LoraTensors

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
    ) -> AdapterGenerator:
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

    def encode(self, ctx: ContextLike) -> EncodedContext:
        """Static mode: render the context the way this generator's encoders read it, then encode."""
        items = ctx.render_items(max_items=self.max_items) if self.encoder.sentence is not None else None
        api_text = None
        if self.encoder.tokens is not None:
            api_text = ctx.render(budget_tokens=self.token_budget, count_tokens=self.encoder.tokens.count_tokens)
        return self.encoder.encode(items=items, api_text=api_text)

    def lora(self, encoded: EncodedContext) -> LoraTensors:
        """Generated {module path: (A [r,in], B [out,r])} for one encoded context."""
        device = next(self.hypernet.parameters()).device
        pooled = None if encoded.pooled is None else encoded.pooled.to(device)
        tokens = None if encoded.tokens is None else encoded.tokens.to(device)
        if encoded.merge_repeats:
            return self.hypernet.generate(pooled, tokens)
        # A token bag given as is (evolving mode): no merging, its own log-count bias.
        log_count = None if encoded.log_count is None else encoded.log_count.to(device).unsqueeze(0)
        with torch.no_grad():
            out = self.hypernet(None if pooled is None else pooled.unsqueeze(0),
                                None if tokens is None else tokens.unsqueeze(0), token_log_count=log_count)
        return {path: (a[0], b[0]) for path, (a, b) in out.items()}

    def generate(self, ctx: ContextLike, out_dir: Path) -> AdapterArtifact:
        """Static mode: encode `ctx`, generate, and write a content-addressed PEFT adapter under `out_dir`."""
        return self.generate_from(lambda: self.encode(ctx), out_dir, context_digest=ctx.digest)

    def generate_from(self, encode: Callable[[], EncodedContext], out_dir: Path, *, context_digest: str,
                      mode: str | None = None) -> AdapterArtifact:
        """Encode (any mode), run the hypernetwork, write the adapter under `out_dir/<sha256>/` (deterministic for
        equal inputs) and time each step. `context_digest` (and `mode`, if given) go into the adapter's header."""
        t0 = time.perf_counter()
        encoded = encode()
        t1 = time.perf_counter()
        tensors = self.lora(encoded)
        t2 = time.perf_counter()
        extra = {"hypernet_version": self.version_id, "context_digest": context_digest}
        if mode is not None:
            extra["mode"] = mode
        files = write_adapter(tensors, Path(out_dir), base_model=self.base_model_name,
                              lora_alpha=self.hypernet.config.lora_alpha, dtype=self.adapter_dtype, extra=extra)
        t3 = time.perf_counter()
        timings = {"encode": (t1 - t0) * 1e3, "forward": (t2 - t1) * 1e3, "write": (t3 - t2) * 1e3,
                   "total": (t3 - t0) * 1e3}
        return AdapterArtifact(path=files.path, sha256=files.sha256, hypernet_version=self.version_id,
                               context_digest=context_digest, rank=self.hypernet.config.rank, nbytes=files.nbytes,
                               timings_ms=timings)


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
