"""Glue: RepoContext -> encoded context -> hypernet forward -> PEFT adapter folder, with timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hypernet.adapter import write_adapter

if TYPE_CHECKING:
    from hypernet.encoder import EncodedContext
    from hypernet.generator import AdapterGenerator


class ContextLike(Protocol):
    """The part of `hypernet.context.RepoContext` the pipeline reads."""

    digest: str

    def render(self, budget_tokens: int = 2048, count_tokens=None) -> str: ...  # noqa: D102

    def render_items(self, max_items: int = 256) -> list[str]: ...  # noqa: D102


@dataclass(frozen=True)
class AdapterArtifact:
    """A generated adapter on disk and where it came from."""

    path: Path
    sha256: str
    hypernet_version: str
    context_digest: str
    rank: int
    nbytes: int
    timings_ms: dict[str, float] = field(default_factory=dict)


def encode_context(ctx: ContextLike, generator: "AdapterGenerator") -> "EncodedContext":
    """Render the context the way the generator's encoders need it, then encode."""
    items = ctx.render_items(max_items=generator.max_items) if generator.encoder.sentence is not None else None
    api_text = None
    if generator.encoder.tokens is not None:
        api_text = ctx.render(budget_tokens=generator.token_budget, count_tokens=generator.encoder.tokens.count_tokens)
    return generator.encoder.encode(items=items, api_text=api_text)


def generate_adapter(ctx: ContextLike, generator: "AdapterGenerator", out_dir: Path) -> AdapterArtifact:
    """Encode, generate and write one adapter into `out_dir/<sha256>/` (deterministic for equal inputs)."""
    t0 = time.perf_counter()
    encoded = encode_context(ctx, generator)
    t1 = time.perf_counter()
    tensors = generator.lora(encoded)
    t2 = time.perf_counter()
    files = write_adapter(
        tensors,
        Path(out_dir),
        base_model=generator.base_model_name,
        lora_alpha=generator.hypernet.config.lora_alpha,
        dtype=generator.adapter_dtype,
        extra={"hypernet_version": generator.version_id, "context_digest": ctx.digest},
    )
    t3 = time.perf_counter()
    timings = {"encode": (t1 - t0) * 1e3, "forward": (t2 - t1) * 1e3, "write": (t3 - t2) * 1e3, "total": (t3 - t0) * 1e3}
    return AdapterArtifact(
        path=files.path,
        sha256=files.sha256,
        hypernet_version=generator.version_id,
        context_digest=ctx.digest,
        rank=generator.hypernet.config.rank,
        nbytes=files.nbytes,
        timings_ms=timings,
    )
