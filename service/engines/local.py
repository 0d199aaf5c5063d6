"""The embedded engine: one transformers model, many stacked LoRA adapters, one scheduler thread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import torch

from .base import (
    BASE_ADAPTER,
    Choice,
    EngineHealth,
    EngineStats,
    GenerationRequest,
    GenerationResult,
    StreamDelta,
)
from .errors import EngineError, InvalidGenerationRequest
from .scheduler import Job, Scheduler
from .stats import StatsRecorder


def load_model(model_path: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> tuple[Any, Any]:
    """Load a causal LM folder and its tokenizer for the local engine."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device)  # type: ignore[arg-type]  # as in hypernet.basemodel
    return model.eval(), tokenizer


class LocalEngine:
    """In-process multi-LoRA engine with continuous batching (see ``scheduler``)."""

    name = "local"
    supports_vocabulary = True  # SamplingParams.vocabulary (repository-vocabulary decoding)

    def __init__(self, model: Any = None, tokenizer: Any = None, *, model_path: str | None = None,
                 slots: int = 8, max_batch_size: int = 32, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, num_threads: int | None = None) -> None:
        if num_threads:
            # process-wide; on shared CPUs fewer threads avoid OpenMP oversubscription stalls
            torch.set_num_threads(num_threads)
        if model is None:
            if model_path is None:
                raise ValueError("give a model and tokenizer, or model_path")
            model, tokenizer = load_model(model_path, dtype, device)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.slots = slots
        self._stats = StatsRecorder()
        self._sched = Scheduler(self.model, tokenizer, slots, max_batch_size, self._stats, device)
        self._started = False

    async def start(self) -> None:
        """Start the scheduler thread (idempotent)."""
        if not self._started:
            self._sched.start()
            self._started = True

    async def aclose(self) -> None:
        """Stop the scheduler thread; queued requests fail with EngineClosed."""
        await asyncio.to_thread(self._sched.stop)

    async def ensure_loaded(self, adapter_id: str, path: str) -> None:
        """Load an adapter now (it is also hot-loaded on first use by a request)."""
        await self.start()
        sched = self._sched
        busy = lambda: {r.job.adapter_name for r in sched.rows}
        await asyncio.wrap_future(sched.call(lambda: sched.adapters.load(adapter_id, str(path), busy())))

    async def unload(self, adapter_id: str) -> None:
        """Remove an adapter (deferred until its running rows finish)."""
        await self.start()
        sched = self._sched
        busy = lambda: {r.job.adapter_name for r in sched.rows}
        await asyncio.wrap_future(sched.call(lambda: sched.adapters.unload(adapter_id, busy())))

    @property
    def context_length(self) -> int:
        """The model's context (prompt plus completion tokens)."""
        return self._sched.max_positions

    @property
    def vocab_size(self) -> int:
        """Token ids a prompt may contain: 0 .. vocab_size - 1."""
        return self._sched.vocab_size

    def _check(self, request: GenerationRequest) -> None:
        """Raise InvalidGenerationRequest (HTTP 400) for a request the model cannot serve, before admission.

        String prompts are tokenized here, once: the request then carries the token ids.
        """
        p = request.params
        if p.n < 1 or p.max_tokens < 1:
            raise InvalidGenerationRequest("n and max_tokens must be >= 1")
        if p.seed is not None and not -(2**63) <= p.seed < 2**63:
            raise InvalidGenerationRequest("seed must be a 64-bit signed integer")
        if p.max_tokens > self.context_length:
            raise InvalidGenerationRequest(f"max_tokens is {p.max_tokens}; the model's context is "
                                           f"{self.context_length} tokens")
        if isinstance(request.prompt, str):
            request.prompt = list(self.tokenizer(request.prompt,
                                                 add_special_tokens=request.add_special_tokens).input_ids)
        vocab = self.vocab_size
        for t in request.prompt:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab:
                raise InvalidGenerationRequest(f"prompt token id {t!r} is outside the vocabulary (0..{vocab - 1})")
        if len(request.prompt) >= self.context_length:
            raise InvalidGenerationRequest(f"prompt has {len(request.prompt)} tokens; the model's context is "
                                           f"{self.context_length}")

    async def validate(self, requests: Sequence[GenerationRequest]) -> None:
        """Check every request before any is admitted (tokenizing off the event loop)."""
        if any(isinstance(r.prompt, str) for r in requests):
            def check_all() -> None:
                for r in requests:
                    self._check(r)

            await asyncio.to_thread(check_all)
        else:
            for r in requests:
                self._check(r)

    def _submit(self, request: GenerationRequest, stream: bool) -> tuple[Job, asyncio.Queue]:
        self._check(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        job = Job(request=request, stream=stream,
                  sink=lambda event: loop.call_soon_threadsafe(queue.put_nowait, event))
        self._sched.submit(job)
        return job, queue

    async def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        await self.start()
        job, queue = self._submit(request, stream=False)
        choices: list[Choice] = []
        prompt_tokens = 0
        try:
            while len(choices) < request.params.n:
                event = await queue.get()
                if isinstance(event, Exception):
                    raise event
                prompt_tokens = event.prompt_tokens or prompt_tokens
                choices.append(Choice(index=event.index, text=event.text, token_ids=event.token_ids,
                                      finish_reason=event.finish_reason or "stop", logprobs=event.logprobs))
        finally:
            job.cancelled = len(choices) < request.params.n  # caller went away: free the rows
        choices.sort(key=lambda c: c.index)
        return GenerationResult(request_id=request.request_id, choices=choices, prompt_tokens=prompt_tokens,
                                completion_tokens=job.completion_tokens)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Run requests concurrently (they share decode steps) and return results in order.

        Every request is checked first; if one fails (or the caller is cancelled) the others are cancelled
        too, so no row keeps running for an answer nobody will read.
        """
        await self.validate(requests)
        tasks = [asyncio.ensure_future(self._generate_one(r)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        """Yield deltas as tokens arrive; closing the iterator cancels the request."""
        await self.validate([request])
        await self.start()
        job, queue = self._submit(request, stream=True)
        finished = 0
        try:
            while finished < request.params.n:
                event = await queue.get()
                if isinstance(event, Exception):
                    raise event
                if event.finish_reason is not None:
                    finished += 1
                yield event
        finally:
            if finished < request.params.n:
                job.cancelled = True

    def loaded(self) -> list[str]:
        """Loaded adapter ids, least recently used first."""
        return self._sched.adapters.lru.ids()

    async def health(self) -> EngineHealth:
        """Healthy while the scheduler thread runs."""
        alive = self._sched.thread.is_alive()
        return EngineHealth(ok=alive or not self._started, detail="scheduler running" if alive else "not started")

    def stats(self) -> EngineStats:
        """Loaded adapters, slots, per-adapter request counts and latency percentiles."""
        queued, running = self._sched.counts()
        return EngineStats(engine=self.name, loaded=self.loaded(), slots=self.slots,
                           requests_per_adapter=self._stats.snapshot_requests(),
                           latency_ms=self._stats.percentiles(), queued=queued, running=running,
                           tokens_generated=self._stats.tokens)


__all__ = ["LocalEngine", "load_model", "BASE_ADAPTER", "EngineError"]
