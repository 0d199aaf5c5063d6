"""OpenAI protocol + serving on the local engine, checked through the official ``openai`` client."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from openai import AsyncOpenAI

from service.api.openai.protocol import ChatCompletionRequest, CompletionRequest
from service.api.openai.serving import (
    SSE_DONE,
    create_chat_completion,
    create_completion,
    engine_error_to_http,
)
from service.engines import AdapterRef, EngineUnavailable
from service.engines.local import LocalEngine, load_model


@pytest.fixture
def app_and_engine(tiny):
    model_dir, adapters = tiny
    model, tok = load_model(str(model_dir))
    engine = LocalEngine(model, tok, slots=2)
    known = {"repo-a": AdapterRef("repo-a@v1", str(adapters[0])), "base": None}
    app = FastAPI()

    async def respond(result):
        if isinstance(result, (dict, list)) or hasattr(result, "model_dump"):
            return JSONResponse(result.model_dump(mode="json"))
        return StreamingResponse(result, media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = CompletionRequest.model_validate(await request.json())
        try:
            return await respond(await create_completion(body, engine, known[body.model]))
        except Exception as exc:
            status, err, headers = engine_error_to_http(exc)
            return JSONResponse(err.model_dump(), status_code=status, headers=headers)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = ChatCompletionRequest.model_validate(await request.json())
        return await respond(await create_chat_completion(body, engine, known[body.model]))

    yield app, engine
    asyncio.run(engine.aclose())


def client(app) -> AsyncOpenAI:
    transport = httpx.ASGITransport(app=app)
    return AsyncOpenAI(api_key="x", base_url="http://test/v1",
                       http_client=httpx.AsyncClient(transport=transport, base_url="http://test"))


def test_completion_and_stream_match(app_and_engine):
    app, _ = app_and_engine

    async def scenario():
        c = client(app)
        whole = await c.completions.create(model="repo-a", prompt=["def", "import"], max_tokens=8,
                                           temperature=0, logprobs=2, n=2)
        parts: dict[int, str] = {}
        usage = None
        stream = await c.completions.create(model="repo-a", prompt=["def", "import"], max_tokens=8,
                                            temperature=0, n=2, stream=True,
                                            stream_options={"include_usage": True})
        async for chunk in stream:
            for ch in chunk.choices:
                parts[ch.index] = parts.get(ch.index, "") + ch.text
            usage = chunk.usage or usage
        return whole, parts, usage

    whole, parts, usage = asyncio.run(scenario())
    assert [c.index for c in whole.choices] == [0, 1, 2, 3]
    assert {c.index: c.text for c in whole.choices} == parts
    assert whole.usage.completion_tokens == usage.completion_tokens
    assert whole.usage.prompt_tokens == usage.prompt_tokens > 0
    lp = whole.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) and len(lp.top_logprobs[0]) == 2


def test_chat_uses_template_and_streams(app_and_engine):
    app, engine = app_and_engine
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "def add"}]

    async def scenario():
        c = client(app)
        whole = await c.chat.completions.create(model="base", messages=msgs, max_tokens=8, temperature=0,
                                                logprobs=True, top_logprobs=1)
        text, first_role = "", None
        async for chunk in await c.chat.completions.create(model="base", messages=msgs, max_tokens=8,
                                                           temperature=0, stream=True):
            for ch in chunk.choices:
                first_role = first_role or ch.delta.role
                text += ch.delta.content or ""
        from service.engines import GenerationRequest, SamplingParams
        prompt = engine.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        direct = await engine.generate([GenerationRequest(prompt, SamplingParams(max_tokens=8, temperature=0),
                                                          add_special_tokens=False)])
        return whole, text, first_role, direct[0].choices[0].text

    whole, text, role, direct = asyncio.run(scenario())
    assert whole.object == "chat.completion" and whole.choices[0].message.role == "assistant"
    assert whole.choices[0].message.content == text == direct
    assert role == "assistant"
    assert whole.choices[0].logprobs.content[0].top_logprobs


def test_error_shape_and_retry_after(app_and_engine):
    status, body, headers = engine_error_to_http(EngineUnavailable("vLLM is down", retry_after=7))
    assert status == 503 and headers == {"Retry-After": "7"}
    assert set(body.model_dump()["error"]) == {"message", "type", "param", "code"}


def test_stream_error_before_first_token_raises(tiny):
    """A refused adapter fails the call itself, so the route can still answer with an HTTP error."""
    model_dir, _ = tiny
    model, tok = load_model(str(model_dir))
    engine = LocalEngine(model, tok)

    async def scenario():
        req = CompletionRequest(model="x", prompt="a", stream=True)
        try:
            await create_completion(req, engine, AdapterRef("bad", str(model_dir / "nope")))
        finally:
            await engine.aclose()

    with pytest.raises(Exception) as info:
        asyncio.run(scenario())
    assert engine_error_to_http(info.value)[0] == 502


def test_sse_framing(app_and_engine):
    app, _ = app_and_engine

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as h:
            r = await h.post("/v1/completions", json={"model": "base", "prompt": "a", "max_tokens": 3,
                                                      "stream": True, "temperature": 0})
            return r.text

    text = asyncio.run(scenario())
    events = text.split("\n\n")
    assert text.endswith(SSE_DONE)
    assert all(e.startswith("data: ") for e in events if e)
    first = json.loads(events[0][len("data: "):])
    assert first["object"] == "text_completion"
