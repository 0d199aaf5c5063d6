"""vLLM engine against a fake vLLM server (httpx.MockTransport)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.api.openai.serving import engine_error_to_http
from service.engines import (
    AdapterRef,
    AdapterRejected,
    EngineAuthFailed,
    EngineUnavailable,
    GenerationRequest,
    SamplingParams,
)
from service.engines.vllm import ZERO_ADAPTER, VllmEngine

from .fakevllm import FakeVllm


@pytest.fixture
def fake():
    return FakeVllm()


@pytest.fixture
def zero_dir(tmp_path):
    """A stand-in zero-adapter folder (the fake vLLM never reads it; the engine names it after its bytes)."""
    path = tmp_path / "zero"
    path.mkdir()
    (path / "adapter_config.json").write_text('{"r": 1}')
    (path / "adapter_model.safetensors").write_bytes(b"zeros")
    return path


@pytest.fixture
def make_engine(zero_dir):
    def _make(fake: FakeVllm, **kw) -> VllmEngine:
        return VllmEngine("http://vllm.test", transport=httpx.MockTransport(fake), zero_adapter_path=str(zero_dir),
                          retry_after=3, **kw)

    return _make


def zero_name(fake: FakeVllm) -> str:
    (name,) = [n for n in fake.loaded if n.startswith(ZERO_ADAPTER + "+")]
    return name


def req(adapter: str | None = None, **params) -> GenerationRequest:
    ref = AdapterRef(adapter, f"/adapters/{adapter}") if adapter else None
    return GenerationRequest("hi", SamplingParams(max_tokens=2, **params), ref)


def test_adapters_are_forwarded_by_name_and_base_uses_zero_adapter(fake, make_engine, zero_dir):
    eng = make_engine(fake, max_loras=3)
    res = asyncio.run(eng.generate([req("org/a@v1"), req(None), req("org/b@v2", logprobs=0)]))
    zero = zero_name(fake)
    assert [r.choices[0].text for r in res] == ["org/a@v1:ok", f"{zero}:ok", "org/b@v2:ok"]
    assert res[2].choices[0].logprobs[1].logprob == -0.2
    assert res[0].prompt_tokens == 3 and res[0].completion_tokens == 2
    assert fake.loaded[zero] == str(zero_dir)
    assert sorted(eng.loaded()) == ["org/a@v1", "org/b@v2"]


def test_lru_matches_max_loras(fake, make_engine):
    eng = make_engine(fake, max_loras=3)  # 2 repo slots + the zero adapter
    asyncio.run(eng.generate([req("a@v1")]))
    asyncio.run(eng.generate([req("b@v1")]))
    asyncio.run(eng.generate([req("a@v1")]))
    asyncio.run(eng.generate([req("c@v1")]))
    assert eng.loaded() == ["a@v1", "c@v1"]
    assert ("unload", "b@v1") in fake.calls and "b@v1" not in fake.loaded
    asyncio.run(eng.unload("a@v1"))
    assert eng.loaded() == ["c@v1"] and "a@v1" not in fake.loaded


def test_vllm_down_maps_to_503(fake, make_engine):
    eng = make_engine(fake)
    fake.down = True
    with pytest.raises(EngineUnavailable) as info:
        asyncio.run(eng.generate([req("a@v1")]))
    status, body, headers = engine_error_to_http(info.value)
    assert status == 503 and headers["Retry-After"] == "3"
    assert body.error.type == "service_unavailable"
    assert not asyncio.run(eng.health()).ok


def test_adapter_refused_maps_to_502_with_vllm_message(fake, make_engine):
    eng = make_engine(fake)
    fake.refuse["big@v1"] = (500, "LoRA rank 64 is greater than max_lora_rank 8.")
    with pytest.raises(AdapterRejected) as info:
        asyncio.run(eng.generate([req("big@v1")]))
    status, body, _ = engine_error_to_http(info.value)
    assert status == 502 and "max_lora_rank 8" in body.error.message
    assert "big@v1" not in eng.loaded()


def test_restart_is_detected_and_adapters_reregistered(fake, make_engine):
    eng = make_engine(fake)
    asyncio.run(eng.generate([req("a@v1"), req(None)]))
    fake.restart()
    res = asyncio.run(eng.generate([req("a@v1")]))
    assert res[0].choices[0].text == "a@v1:ok"
    assert fake.calls.count(("load", "a@v1")) == 2
    res = asyncio.run(eng.generate([req(None)]))  # zero adapter comes back too
    assert res[0].choices[0].text == f"{zero_name(fake)}:ok"


def test_already_loaded_from_the_same_folder_is_kept(fake, make_engine):
    fake.loaded["a@v1"] = "/adapters/a@v1"  # our process restarted, vLLM did not
    eng = make_engine(fake)
    asyncio.run(eng.ensure_loaded("a@v1", "/adapters/a@v1"))
    assert eng.loaded() == ["a@v1"]
    assert ("unload", "a@v1") not in fake.calls and eng.replaced == 0


def test_already_loaded_from_another_folder_is_loaded_again(fake, make_engine):
    # another service (or an earlier data dir) loaded this name from its own folder, which may be gone
    fake.loaded["a@v1"] = "/old-data-dir/adapters/a@v1"
    eng = make_engine(fake)
    res = asyncio.run(eng.generate([req("a@v1")]))
    assert res[0].choices[0].text == "a@v1:ok"
    assert fake.loaded["a@v1"] == "/adapters/a@v1"  # vLLM now serves the name from our folder
    assert fake.calls[:4] == [("load", "a@v1"), ("models", ""), ("unload", "a@v1"), ("load", "a@v1")]
    assert eng.replaced == 1 and eng.loaded() == ["a@v1"]


def test_already_loaded_zero_adapter_from_another_folder_is_loaded_again(fake, make_engine, zero_dir):
    eng = make_engine(fake)
    asyncio.run(eng.generate([req(None)]))
    zero = zero_name(fake)
    fake.loaded[zero] = "/elsewhere/zero"
    other = make_engine(fake)  # a second service process against the same vLLM
    asyncio.run(other.generate([req(None)]))
    assert fake.loaded[zero] == str(zero_dir) and other.replaced == 1


def test_zero_adapter_name_follows_its_bytes(fake, make_engine, zero_dir):
    asyncio.run(make_engine(fake).generate([req(None)]))
    first = zero_name(fake)
    fake.restart()
    (zero_dir / "adapter_model.safetensors").write_bytes(b"other zeros")  # e.g. another base model's shapes
    asyncio.run(make_engine(fake).generate([req(None)]))
    assert zero_name(fake) != first


def test_already_loaded_name_not_listed_is_loaded_again(fake, make_engine):
    # a vLLM that does not list the name (or lists no root): nothing proves it is ours, so load it again
    fake.loaded["a@v1"] = "/adapters/a@v1"
    original = fake.__call__

    def no_root(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "a@v1"}]})
        return original(request)

    eng = VllmEngine("http://vllm.test", transport=httpx.MockTransport(no_root), zero_adapter_path="/zero")
    asyncio.run(eng.ensure_loaded("a@v1", "/adapters/a@v1"))
    assert ("unload", "a@v1") in fake.calls and eng.replaced == 1


def test_stream_deltas_and_usage(fake, make_engine):
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


def test_api_key_is_sent_on_every_call(fake, make_engine):
    fake.api_key = "k-123"
    eng = make_engine(fake, api_key="k-123")
    res = asyncio.run(eng.generate([req("a@v1"), req(None)]))
    assert res[0].choices[0].text == "a@v1:ok"
    fake.loaded["b@v1"] = "/elsewhere"  # the "already loaded" check reads /v1/models with the key too
    asyncio.run(eng.ensure_loaded("b@v1", "/adapters/b@v1"))
    asyncio.run(eng.unload("a@v1"))
    assert not [c for c in fake.calls if c[0] == "unauthorized"]
    health = asyncio.run(eng.health())
    assert health.ok, health.detail


@pytest.mark.parametrize("key", [None, "wrong"])
def test_refused_key_is_an_auth_failure_in_health_and_requests(fake, make_engine, key):
    fake.api_key = "k-123"
    eng = make_engine(fake, api_key=key)
    health = asyncio.run(eng.health())  # /health itself is open: only /v1/models shows the refusal
    assert not health.ok and "401" in health.detail and "CODE2LORA_VLLM_API_KEY" in health.detail
    assert ("no key" in health.detail) == (key is None)
    with pytest.raises(EngineAuthFailed) as info:
        asyncio.run(eng.generate([req("a@v1")]))
    status, body, _ = engine_error_to_http(info.value)
    assert status == 502 and body.error.type == "engine_auth_failed"
    assert eng.loaded() == []

    async def collect():
        return [d async for d in eng.stream(req(None))]

    with pytest.raises(EngineAuthFailed):
        asyncio.run(collect())


@pytest.fixture
def base_dir(tmp_path):
    """A base model folder with just a Llama config.json (the probe adapter's shapes come from it)."""
    import json

    path = tmp_path / "base"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4,
                                                  "num_key_value_heads": 2, "num_hidden_layers": 2}))
    return path


def test_base_goes_to_the_plain_model_when_the_probe_finds_no_defect(fake, make_engine, base_dir):
    eng = make_engine(fake, max_loras=3, use_zero_adapter=None, base_model_path=str(base_dir))
    assert eng.slots == 2  # one slot kept for the zero adapter until decided
    res = asyncio.run(eng.generate([req(None)]))
    assert res[0].choices[0].text == "base-model:ok"
    assert eng.base_probe["defect"] is False and eng.use_zero_adapter is False
    assert not [n for n in fake.loaded if n.startswith(ZERO_ADAPTER)]  # no zero adapter registered
    probes = [n for kind, n in fake.calls if kind == "load" and n.startswith("code2lora-probe+")]
    assert probes and ("unload", probes[0]) in fake.calls and probes[0] not in fake.loaded
    assert eng.slots == 3  # the zero adapter's slot went back to repositories
    assert "plain" in asyncio.run(eng.health()).detail
    calls = len(fake.calls)
    asyncio.run(eng.generate([req(None)]))  # decided once
    assert not [c for c in fake.calls[calls:] if c[0] == "load"]


def test_base_goes_through_the_zero_adapter_when_the_probe_finds_the_defect(fake, make_engine, base_dir):
    fake.defect = True
    eng = make_engine(fake, use_zero_adapter=None, base_model_path=str(base_dir))
    res = asyncio.run(eng.generate([req(None)]))
    assert res[0].choices[0].text.startswith(ZERO_ADAPTER + "+")
    assert eng.base_probe["defect"] is True and "changed" in eng.base_probe["reason"]
    assert "zero adapter" in asyncio.run(eng.health()).detail


def test_an_inconclusive_probe_keeps_the_zero_adapter(fake, make_engine, base_dir):
    fake.lora_changes_output = False  # the probe adapter cannot show anything
    eng = make_engine(fake, use_zero_adapter=None, base_model_path=str(base_dir))
    asyncio.run(eng.generate([req(None)]))
    assert eng.use_zero_adapter is True and "inconclusive" in eng.base_probe["reason"]


def test_probe_adapter_changes_weights_and_zero_adapter_is_exactly_zero(base_dir, tmp_path):
    from safetensors.torch import load_file

    from service.engines.zero_adapter import write_probe_adapter, write_zero_adapter

    zero = load_file(str(write_zero_adapter(base_dir, tmp_path / "z") / "adapter_model.safetensors"))
    probe = load_file(str(write_probe_adapter(base_dir, tmp_path / "p") / "adapter_model.safetensors"))
    assert zero.keys() == probe.keys() and len(zero) == 2 * 2 * 2
    assert all(not t.any() for t in zero.values()) and all(t.abs().sum() > 0 for t in probe.values())


def test_filesystem_resolver_mode_asks_for_artifact_folders_by_name(fake, zero_dir, tmp_path):
    """With resolver_dir, an adapter folder directly under it is requested by its folder name and never loaded with
    /v1/load_lora_adapter (vLLM's filesystem resolver loads it); other folders are still loaded; unload names the
    folder; a folder vLLM cannot resolve is a 502 that says how vLLM must be started."""
    artifacts = tmp_path / "artifacts"
    sha = "ab" * 32
    (artifacts / sha).mkdir(parents=True)
    (artifacts / sha / "adapter_config.json").write_text("{}")
    fake.resolver_dir = str(artifacts)
    eng = VllmEngine("http://vllm.test", transport=httpx.MockTransport(fake), zero_adapter_path=str(zero_dir),
                     resolver_dir=str(artifacts), use_zero_adapter=False, served_model="base-model")
    in_dir = GenerationRequest("hi", SamplingParams(max_tokens=2), AdapterRef("org/a@v1+abababababababab",
                                                                              str(artifacts / sha)))
    elsewhere = req("org/b@v1")
    res = asyncio.run(eng.generate([in_dir, elsewhere]))
    assert [r.choices[0].text for r in res] == [f"{sha}:ok", "org/b@v1:ok"]
    loads = [name for kind, name in fake.calls if kind == "load"]
    assert loads == ["org/b@v1"] and ("resolved", sha) in fake.calls
    assert sorted(eng.loaded()) == ["org/a@v1+abababababababab", "org/b@v1"]
    asyncio.run(eng.unload("org/a@v1+abababababababab"))
    assert ("unload", sha) in fake.calls and sha not in fake.loaded
    missing = GenerationRequest("hi", SamplingParams(max_tokens=2), AdapterRef("org/c@v1", str(artifacts / ("cd" * 32))))
    with pytest.raises(AdapterRejected) as err:
        asyncio.run(eng.generate([missing]))
    assert "VLLM_LORA_RESOLVER_CACHE_DIR" in str(err.value)
