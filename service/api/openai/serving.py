"""OpenAI completions and chat served by an Engine, independent of the DB.

The caller (the route) resolves ``model`` to an adapter (id + folder) or None for the base model,
then calls ``create_completion`` / ``create_chat_completion``: they return a response model, or an
async iterator of SSE strings (``data: {...}\\n\\n`` ... ``data: [DONE]\\n\\n``) when ``stream`` is set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic import BaseModel

from service.engines.base import (
    AdapterRef,
    Engine,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    StreamDelta,
    TokenLogprob,
)
from service.engines.errors import EngineError, EngineUnavailable, InvalidGenerationRequest

from .protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatStreamChoice,
    ChatTokenLogprob,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
    DeltaMessage,
    ErrorInfo,
    ErrorResponse,
    TopLogprob,
    UsageInfo,
    random_id,
)

DEFAULT_CHAT_MAX_TOKENS = 512


# ---- errors ---------------------------------------------------------------------------------
def error_response(message: str, err_type: str = "invalid_request_error", code: int | str | None = 400,
                   param: str | None = None) -> ErrorResponse:
    """An OpenAI-shaped error body."""
    return ErrorResponse(error=ErrorInfo(message=message, type=err_type, param=param, code=code))


def engine_error_to_http(exc: Exception) -> tuple[int, ErrorResponse, dict[str, str]]:
    """(status, body, headers) for an engine exception; unknown exceptions become 500."""
    if isinstance(exc, EngineError):
        headers = {}
        if isinstance(exc, EngineUnavailable):
            headers["Retry-After"] = str(max(1, int(round(exc.retry_after))))
        return exc.status_code, error_response(str(exc), exc.error_type, exc.status_code), headers
    return 500, error_response("internal error", "internal_server_error", 500), {}


def sse(payload: BaseModel | str) -> str:
    """One server-sent event line pair."""
    data = payload if isinstance(payload, str) else payload.model_dump_json(exclude_none=False)
    return f"data: {data}\n\n"


SSE_DONE = "data: [DONE]\n\n"


# ---- request -> engine ----------------------------------------------------------------------
def sampling_params(request: CompletionRequest | ChatCompletionRequest) -> SamplingParams:
    """Engine sampling parameters from an OpenAI request."""
    if isinstance(request, ChatCompletionRequest):
        max_tokens = request.max_completion_tokens or request.max_tokens or DEFAULT_CHAT_MAX_TOKENS
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
    else:
        max_tokens = request.max_tokens or 16
        logprobs = request.logprobs
    return SamplingParams(max_tokens=max_tokens, temperature=request.temperature, top_p=request.top_p,
                          stop=list(request.stop or []), n=request.n, seed=request.seed, logprobs=logprobs)


async def validate(engine: Engine, requests: list[GenerationRequest]) -> None:
    """Let the engine refuse invalid input (token ids past its vocabulary, ...) before anything is admitted."""
    check = getattr(engine, "validate", None)
    if check is not None:
        await check(requests)


def prompt_list(prompt: Any) -> list[str | list[int]]:
    """The prompts of a completions request (a string, a token list, or a list of either)."""
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(t, int) for t in prompt):
        return [list(prompt)]
    return list(prompt)


def render_chat(request: ChatCompletionRequest, tokenizer: Any) -> str:
    """The prompt text from the base model tokenizer's chat template."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise InvalidGenerationRequest("the base model has no chat template; use /v1/completions")
    messages = [{"role": m.role, "content": m.text()} for m in request.messages]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# ---- engine -> response ---------------------------------------------------------------------
def completion_logprobs(items: list[TokenLogprob] | None, want_top: bool, offset: int = 0) -> CompletionLogprobs | None:
    """Legacy completions logprobs block."""
    if items is None:
        return None
    offsets, pos = [], offset
    for lp in items:
        offsets.append(pos)
        pos += len(lp.token)
    return CompletionLogprobs(tokens=[lp.token for lp in items], token_logprobs=[lp.logprob for lp in items],
                              top_logprobs=[dict(lp.top_logprobs) for lp in items] if want_top else None,
                              text_offset=offsets)


def chat_logprobs(items: list[TokenLogprob] | None) -> ChatLogprobs | None:
    """Chat logprobs block (``content`` list with bytes and top alternatives)."""
    if items is None:
        return None
    return ChatLogprobs(content=[
        ChatTokenLogprob(token=lp.token, logprob=lp.logprob, bytes=list(lp.token.encode()),
                         top_logprobs=[TopLogprob(token=t, logprob=v, bytes=list(t.encode()))
                                       for t, v in lp.top_logprobs.items()])
        for lp in items])


def _usage(results: Sequence[GenerationResult]) -> UsageInfo:
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    return UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


async def _merged(streams: list[AsyncIterator[StreamDelta]]) -> AsyncIterator[tuple[int, StreamDelta]]:
    """Interleave several engine streams, tagging each delta with its stream's position."""
    if len(streams) == 1:
        async for d in streams[0]:
            yield 0, d
        return
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i: int, it: AsyncIterator[StreamDelta]) -> None:
        try:
            async for d in it:
                await queue.put((i, d))
            await queue.put((i, done))
        except Exception as exc:  # forwarded to the consumer
            await queue.put((i, exc))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()


async def _primed(agen: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Start ``agen`` now so errors before the first item (adapter refused, engine down) raise here."""
    try:
        first = await agen.__anext__()
    except StopAsyncIteration:
        first = None

    async def rest() -> AsyncIterator[Any]:
        if first is not None:
            yield first
        async for item in agen:
            yield item

    return rest()


async def _sse_with_errors(events: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        async for e in events:
            yield e
    except Exception as exc:  # headers are sent: report in-band like vLLM, then end the stream
        _, body, _ = engine_error_to_http(exc)
        yield sse(body)
    yield SSE_DONE


# ---- completions ----------------------------------------------------------------------------
async def create_completion(request: CompletionRequest, engine: Engine, adapter: AdapterRef | None,
                            *, model_name: str | None = None, vocabulary: frozenset[str] | None = None,
                            vocabulary_penalty: float = math.inf) -> CompletionResponse | AsyncIterator[str]:
    """Serve ``/v1/completions`` with ``adapter`` (None = base model), with repository-vocabulary decoding
    when `vocabulary` is given."""
    if request.echo:
        raise InvalidGenerationRequest("echo is not supported")
    params = dataclasses.replace(sampling_params(request), vocabulary=vocabulary or None,
                                 vocabulary_penalty=vocabulary_penalty)
    prompts = prompt_list(request.prompt)
    reqs = [GenerationRequest(prompt=p, params=params, adapter=adapter) for p in prompts]
    await validate(engine, reqs)
    name = model_name or request.model
    want_top = bool(request.logprobs)
    if not request.stream:
        results = await engine.generate(reqs)
        choices = [CompletionChoice(index=i * params.n + c.index, text=c.text, finish_reason=c.finish_reason,
                                    logprobs=completion_logprobs(c.logprobs, want_top))
                   for i, r in enumerate(results) for c in r.choices]
        return CompletionResponse(model=name, choices=choices, usage=_usage(results))

    stream_id = random_id("cmpl")
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    deltas = await _primed(_merged([engine.stream(r) for r in reqs]))

    async def events() -> AsyncIterator[str]:
        usage = UsageInfo()
        offsets: dict[int, int] = {}
        async for i, d in deltas:
            index = i * params.n + d.index
            lp = completion_logprobs(d.logprobs, want_top, offsets.get(index, 0))
            offsets[index] = offsets.get(index, 0) + sum(len(t.token) for t in d.logprobs or [])
            _count(usage, d, first_choice=d.index == 0)
            yield sse(CompletionStreamResponse(id=stream_id, model=name, choices=[CompletionChoice(
                index=index, text=d.text, logprobs=lp, finish_reason=d.finish_reason)]))
        if include_usage:
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
            yield sse(CompletionStreamResponse(id=stream_id, model=name, choices=[], usage=usage))

    return _sse_with_errors(events())


def _count(usage: UsageInfo, d: StreamDelta, first_choice: bool) -> None:
    if d.finish_reason is None:
        return
    if first_choice:  # the prompt is counted once, not once per choice
        usage.prompt_tokens += d.prompt_tokens or 0
    usage.completion_tokens += d.completion_tokens or 0


# ---- chat -----------------------------------------------------------------------------------
async def create_chat_completion(request: ChatCompletionRequest, engine: Engine, adapter: AdapterRef | None,
                                 *, tokenizer: Any = None, model_name: str | None = None
                                 ) -> ChatCompletionResponse | AsyncIterator[str]:
    """Serve ``/v1/chat/completions``; the prompt comes from the base tokenizer's chat template."""
    tokenizer = tokenizer if tokenizer is not None else getattr(engine, "tokenizer", None)
    prompt = render_chat(request, tokenizer)
    params = sampling_params(request)
    context = getattr(engine, "context_length", None)
    if context and request.max_completion_tokens is None and request.max_tokens is None:
        params.max_tokens = min(params.max_tokens, context)  # the default, not a request: never a 400
    req = GenerationRequest(prompt=prompt, params=params, adapter=adapter, add_special_tokens=False)
    await validate(engine, [req])
    name = model_name or request.model
    if not request.stream:
        (result,) = await engine.generate([req])
        choices = [ChatChoice(index=c.index, message=AssistantMessage(content=c.text),
                              logprobs=chat_logprobs(c.logprobs), finish_reason=c.finish_reason)
                   for c in result.choices]
        return ChatCompletionResponse(model=name, choices=choices, usage=_usage([result]))

    stream_id = random_id("chatcmpl")
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    deltas = await _primed(engine.stream(req))

    async def events() -> AsyncIterator[str]:
        for i in range(params.n):  # OpenAI sends the role first, with empty content
            yield sse(ChatCompletionChunk(id=stream_id, model=name, choices=[
                ChatStreamChoice(index=i, delta=DeltaMessage(role="assistant", content=""))]))
        usage = UsageInfo()
        async for d in deltas:
            _count(usage, d, first_choice=d.index == 0)
            yield sse(ChatCompletionChunk(id=stream_id, model=name, choices=[ChatStreamChoice(
                index=d.index, delta=DeltaMessage(content=d.text), logprobs=chat_logprobs(d.logprobs),
                finish_reason=d.finish_reason)]))
        if include_usage:
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
            yield sse(ChatCompletionChunk(id=stream_id, model=name, choices=[], usage=usage))

    return _sse_with_errors(events())
