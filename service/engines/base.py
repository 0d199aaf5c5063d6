"""The Engine protocol and the plain data types every engine speaks."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

BASE_ADAPTER = "__base__"  # the name of "no adapter" (as in PEFT's ``adapter_names``)


@dataclass(frozen=True)
class AdapterRef:
    """An adapter resolved by the caller: immutable id (e.g. ``owner/repo@v3``) and PEFT folder."""

    id: str
    path: str


@dataclass
class SamplingParams:
    """OpenAI-style sampling knobs; ``temperature == 0`` means greedy."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    n: int = 1
    seed: int | None = None
    logprobs: int | None = None  # None: off; k >= 0: chosen-token logprob plus top-k alternatives
    ignore_eos: bool = False  # keep generating past EOS (benchmarks, as vLLM's ignore_eos)
    # repository-vocabulary decoding (hypernet.decoding): identifiers stay on these names or the prompt's words;
    # engines with `supports_vocabulary` only. The penalty is in nats, inf masks.
    vocabulary: frozenset[str] | None = None
    vocabulary_penalty: float = math.inf


@dataclass
class GenerationRequest:
    """One prompt with its own adapter (or ``None`` for the base model)."""

    prompt: str | list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    adapter: AdapterRef | None = None
    add_special_tokens: bool = True  # False for prompts rendered by a chat template
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class TokenLogprob:
    """Logprob of one generated token, with the top alternatives when asked for."""

    token: str
    token_id: int
    logprob: float
    top_logprobs: dict[str, float] = field(default_factory=dict)


@dataclass
class Choice:
    """One of the ``n`` completions of a request."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" | "length"
    logprobs: list[TokenLogprob] | None = None


@dataclass
class GenerationResult:
    """All choices of one request plus usage counts."""

    request_id: str
    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int


@dataclass
class StreamDelta:
    """A piece of streamed text for choice ``index``; ``finish_reason`` set on the last one."""

    index: int
    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None  # set on the final delta of each choice, for usage
    completion_tokens: int | None = None  # ditto: tokens this choice generated


@dataclass
class EngineHealth:
    """Liveness of the engine and its backend."""

    ok: bool
    detail: str = ""
    replicas: list[dict[str, Any]] | None = None  # one entry per backend replica, where there are several


@dataclass
class EngineStats:
    """Dashboard snapshot: loaded adapters, slots, per-adapter counts, latency percentiles (ms)."""

    engine: str
    loaded: list[str]
    slots: int
    requests_per_adapter: dict[str, int]
    latency_ms: dict[str, float]
    queued: int = 0
    running: int = 0
    tokens_generated: int = 0
    replicas: list[dict[str, Any]] | None = None  # per backend replica: url, ok, loaded, served, failovers


@runtime_checkable
class Engine(Protocol):
    """A multi-LoRA text generation backend shared by all API requests."""

    name: str

    async def start(self) -> None:
        """Start background work (scheduler thread, HTTP client)."""

    async def aclose(self) -> None:
        """Stop background work and fail queued requests."""

    async def ensure_loaded(self, adapter_id: str, path: str) -> None:
        """Make ``adapter_id`` (PEFT folder ``path``) servable, evicting a cold one if slots are full."""

    async def unload(self, adapter_id: str) -> None:
        """Forget ``adapter_id``; a no-op when it is not loaded."""

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Run every request (each with its own adapter or none) and return results in order."""

    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        """Yield text deltas of one request as tokens are produced."""

    def loaded(self) -> list[str]:
        """Ids of the adapters loaded now, least recently used first."""

    async def health(self) -> EngineHealth:
        """Whether the engine can serve now."""

    def stats(self) -> EngineStats:
        """Counters and latency percentiles for the dashboard."""
