"""The generation path's types: what a context must offer (`ContextLike`) and what a generation returns
(`AdapterArtifact`). The path itself is `hypernet.generator.AdapterGenerator` (static mode: `generate`; evolving
mode: `hypernet.evolve.generate_from_state`; both end in `AdapterGenerator.generate_from`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class ContextLike(Protocol):
    """The part of `hypernet.context.RepoContext` the generator reads."""

    digest: str

    def render(self, budget_tokens: int = 2048, count_tokens: Callable[[str], int] | None = None) -> str: ...

    def render_items(self, max_items: int = 256) -> list[str]: ...


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
