"""vLLM engine against a fake vLLM server (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from service.api.openai.serving import engine_error_to_http
from service.engines import AdapterRef, AdapterRejected, EngineUnavailable, GenerationRequest, SamplingParams
from service.engines.vllm import ZERO_ADAPTER, VllmEngine


class FakeVllm:
    """Just enough of vLLM's OpenAI server: runtime LoRA routes, completions, health."""

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.refuse: dict[str, tuple[int, str]] = {}
        self.down = False

    def restart(self) -> None:
        self.loaded.clear()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        body = json.loads(request.content or b"{}")
        if path == "/health":
            return httpx.Response(200)
        if path == "/v1/load_lora_adapter":
            name = body["lora_name"]
            self.calls.append(("load", name))
            if name in self.refuse:
                status, msg = self.refuse[name]
                return httpx.Response(status, json={"error": {"message": msg, "type": "BadRequestError",
                                                              "param": None, "code": status}})
            if name in self.loaded:
                return httpx.Response(400, json={"error": {"message": f"The lora adapter '{name}' has already "
                                                           "been loaded.", "type": "InvalidUserInput", "code": 400}})
            self.loaded[name] = body["lora_path"]
            return httpx.Response(200, text=f"Success: LoRA adapter '{name}' added successfully.")
        if path == "/v1/unload_lora_adapter":
            self.calls.append(("unload", body["lora_name"]))
            if self.loaded.pop(body["lora_name"], None) is None:
                return httpx.Response(404, json={"error": {"message": "not found", "code": 404}})
            return httpx.Response(200, text="Success")
        if path == "/v1/completions":
            model = body["model"]
            self.calls.append(("complete", model))
            if model not in self.loaded:
                return httpx.Response(404, json={"error": {"message": f"The model `{model}` does not exist.",
                                                           "type": "NotFoundError", "param": "model", "code": 404}})
            n = body.get("n", 1)
            if body.get("stream"):
                chunks = []
                for i in range(n):
                    chunks.append({"choices": [{"index": i, "text": f"{model}:", "finish_reason": None}]})
                    chunks.append({"choices": [{"index": i, "text": "ok", "finish_reason": "length"}]})
                chunks.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2 * n,
                                                        "total_tokens": 3 + 2 * n}})
                text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
                return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
            return httpx.Response(200, json={
                "choices": [{"index": i, "text": f"{model}:ok", "finish_reason": "length", "token_ids": [1, 2],
                             "logprobs": {"tokens": ["a", "b"], "token_logprobs": [-0.1, -0.2],
                                          "top_logprobs": None, "text_offset": [0, 1]}} for i in range(n)],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2 * n, "total_tokens": 3 + 2 * n}})
        return httpx.Response(404)


@pytest.fixture
def fake():
    return FakeVllm()


def make_engine(fake: FakeVllm, **kw) -> VllmEngine:
    return VllmEngine("http://vllm.test", transport=httpx.MockTransport(fake), zero_adapter_path="/zero",
                      retry_after=3, **kw)


def req(adapter: str | None = None, **params) -> GenerationRequest:
    ref = AdapterRef(adapter, f"/adapters/{adapter}") if adapter else None
    return GenerationRequest("hi", SamplingParams(max_tokens=2, **params), ref)


def test_adapters_are_forwarded_by_name_and_base_uses_zero_adapter(fake):
    eng = make_engine(fake, max_loras=3)
    res = asyncio.run(eng.generate([req("org/a@v1"), req(None), req("org/b@v2", logprobs=0)]))
    assert [r.choices[0].text for r in res] == ["org/a@v1:ok", f"{ZERO_ADAPTER}:ok", "org/b@v2:ok"]
    assert res[2].choices[0].logprobs[1].logprob == -0.2
    assert res[0].prompt_tokens == 3 and res[0].completion_tokens == 2
    assert fake.loaded[ZERO_ADAPTER] == "/zero"
    assert sorted(eng.loaded()) == ["org/a@v1", "org/b@v2"]


def test_lru_matches_max_loras(fake):
    eng = make_engine(fake, max_loras=3)  # 2 repo slots + the zero adapter
    asyncio.run(eng.generate([req("a@v1")]))
    asyncio.run(eng.generate([req("b@v1")]))
    asyncio.run(eng.generate([req("a@v1")]))
    asyncio.run(eng.generate([req("c@v1")]))
    assert eng.loaded() == ["a@v1", "c@v1"]
    assert ("unload", "b@v1") in fake.calls and "b@v1" not in fake.loaded
    asyncio.run(eng.unload("a@v1"))
    assert eng.loaded() == ["c@v1"] and "a@v1" not in fake.loaded


def test_vllm_down_maps_to_503(fake):
    eng = make_engine(fake)
    fake.down = True
    with pytest.raises(EngineUnavailable) as info:
        asyncio.run(eng.generate([req("a@v1")]))
    status, body, headers = engine_error_to_http(info.value)
    assert status == 503 and headers["Retry-After"] == "3"
    assert body.error.type == "service_unavailable"
    assert not asyncio.run(eng.health()).ok


def test_adapter_refused_maps_to_502_with_vllm_message(fake):
    eng = make_engine(fake)
    fake.refuse["big@v1"] = (500, "LoRA rank 64 is greater than max_lora_rank 8.")
    with pytest.raises(AdapterRejected) as info:
        asyncio.run(eng.generate([req("big@v1")]))
    status, body, _ = engine_error_to_http(info.value)
    assert status == 502 and "max_lora_rank 8" in body.error.message
    assert "big@v1" not in eng.loaded()


def test_restart_is_detected_and_adapters_reregistered(fake):
    eng = make_engine(fake)
    asyncio.run(eng.generate([req("a@v1"), req(None)]))
    fake.restart()
    res = asyncio.run(eng.generate([req("a@v1")]))
    assert res[0].choices[0].text == "a@v1:ok"
    assert fake.calls.count(("load", "a@v1")) == 2
    res = asyncio.run(eng.generate([req(None)]))  # zero adapter comes back too
    assert res[0].choices[0].text == f"{ZERO_ADAPTER}:ok"


def test_already_loaded_counts_as_loaded(fake):
    fake.loaded["a@v1"] = "/adapters/a@v1"
    eng = make_engine(fake)
    asyncio.run(eng.ensure_loaded("a@v1", "/adapters/a@v1"))
    assert eng.loaded() == ["a@v1"]


def test_stream_deltas_and_usage(fake):
    eng = make_engine(fake)

    async def collect():
        return [d async for d in eng.stream(req("a@v1", n=2))]

    deltas = asyncio.run(collect())
    texts = {0: "", 1: ""}
    for d in deltas:
        texts[d.index] += d.text
    assert texts == {0: "a@v1:ok", 1: "a@v1:ok"}
    finals = [d for d in deltas if d.finish_reason]
    assert len(finals) == 2 and sum(d.completion_tokens for d in finals) == 4
    assert sum(d.prompt_tokens for d in finals) == 3
    stats = eng.stats()
    assert stats.requests_per_adapter == {"a@v1": 1} and stats.slots == 7
