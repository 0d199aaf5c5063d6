"""Local engine on a tiny random Llama with hand-made adapters."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch
from peft import PeftModel

from service.engines import AdapterRef, AdapterRejected, GenerationRequest, SamplingParams
from service.engines.local import LocalEngine, load_model

PROMPTS = ["def add(a", "import os", "class Repo:\n    def", "The quick"]
GREEDY = SamplingParams(max_tokens=10, temperature=0.0)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def engine_factory(tiny):
    engines = []

    def make(**kwargs) -> LocalEngine:
        model, tok = load_model(str(tiny[0]))
        eng = LocalEngine(model, tok, **kwargs)
        engines.append(eng)
        return eng

    yield make
    for eng in engines:
        run(eng.aclose())


def reference_greedy(model_dir, adapter_dir, prompt: str, max_tokens: int) -> list[int]:
    """Plain full-recompute greedy loop, one adapter (or none), no engine code."""
    model, tok = load_model(str(model_dir))
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    ids = tok(prompt).input_ids
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_tokens):
            nxt = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
    return out


def test_mixed_batch_matches_each_adapter_alone(tiny, engine_factory):
    model_dir, adapters = tiny
    eng = engine_factory(slots=4)
    refs = [None, AdapterRef("a0", str(adapters[0])), AdapterRef("a1", str(adapters[1])), None]
    reqs = [GenerationRequest(p, GREEDY, r) for p, r in zip(PROMPTS, refs, strict=False)]
    mixed = run(eng.generate(reqs))
    expected = [reference_greedy(model_dir, None if r is None else r.path, p, GREEDY.max_tokens)
                for p, r in zip(PROMPTS, refs, strict=False)]
    assert [m.choices[0].token_ids for m in mixed] == expected
    # adapters really change the output, so the comparison above is not vacuous
    same_prompt = run(eng.generate([GenerationRequest(PROMPTS[0], GREEDY, r) for r in refs[:3]]))
    assert len({tuple(r.choices[0].token_ids) for r in same_prompt}) == 3
    assert mixed[0].prompt_tokens > 0 and mixed[0].completion_tokens >= len(mixed[0].choices[0].token_ids)


def test_lru_eviction_and_hot_load(tiny, engine_factory):
    _, adapters = tiny
    eng = engine_factory(slots=2)
    refs = [AdapterRef(f"a{i}", str(p)) for i, p in enumerate(adapters[:3])]
    run(eng.generate([GenerationRequest("x", GREEDY, refs[0])]))  # hot-load on first use
    assert eng.loaded() == ["a0"]
    run(eng.ensure_loaded("a1", refs[1].path))
    run(eng.generate([GenerationRequest("x", GREEDY, refs[0])]))  # a0 becomes most recent
    assert eng.loaded() == ["a1", "a0"]
    run(eng.generate([GenerationRequest("x", GREEDY, refs[2])]))
    assert eng.loaded() == ["a0", "a2"]  # a1 was coldest
    run(eng.unload("a0"))
    assert eng.loaded() == ["a2"]
    stats = eng.stats()
    assert stats.slots == 2 and stats.requests_per_adapter["a0"] == 2 and "p50" in stats.latency_ms


def test_slot_limit_waits_instead_of_failing(tiny, engine_factory):
    _, adapters = tiny
    eng = engine_factory(slots=1)
    reqs = [GenerationRequest(p, GREEDY, AdapterRef(f"a{i}", str(adapters[i])))
            for i, p in enumerate(PROMPTS[:3])]
    results = run(eng.generate(reqs))
    alone = [run(eng.generate([r]))[0] for r in reqs]
    assert [r.choices[0].token_ids for r in results] == [r.choices[0].token_ids for r in alone]
    assert len(eng.loaded()) == 1


def test_bad_adapter_path_is_rejected(tiny, engine_factory):
    eng = engine_factory(slots=2)
    with pytest.raises(AdapterRejected):
        run(eng.generate([GenerationRequest("x", GREEDY, AdapterRef("bad", str(tiny[0] / "missing")))]))
    assert run(eng.generate([GenerationRequest("x", GREEDY)]))[0].choices[0].finish_reason in {"stop", "length"}


def test_stop_strings(engine_factory):
    eng = engine_factory()
    full = run(eng.generate([GenerationRequest(PROMPTS[2], SamplingParams(max_tokens=20, temperature=0))]))
    text = full[0].choices[0].text
    assert len(text) > 4
    stop = text[3:5]
    cut = run(eng.generate([GenerationRequest(
        PROMPTS[2], SamplingParams(max_tokens=20, temperature=0, stop=["zzz-never", stop]))]))[0].choices[0]
    assert cut.text == text[: text.find(stop)]
    assert cut.finish_reason == "stop"
    assert full[0].choices[0].finish_reason in {"length", "stop"}


def test_n_and_seed_reproducible(tiny, engine_factory):
    _, adapters = tiny
    eng = engine_factory()
    params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.95, n=3, seed=1234)
    ref = AdapterRef("a0", str(adapters[0]))
    one = run(eng.generate([GenerationRequest("import", params, ref)]))[0]
    assert [c.index for c in one.choices] == [0, 1, 2]
    # same seed, now sharing the batch with other traffic: identical choices
    other = GenerationRequest("def", SamplingParams(max_tokens=15, temperature=1.0))
    two = run(eng.generate([other, GenerationRequest("import", params, ref)]))[1]
    assert [c.token_ids for c in one.choices] == [c.token_ids for c in two.choices]
    assert len({tuple(c.token_ids) for c in one.choices}) > 1
    assert one.completion_tokens >= sum(len(c.token_ids) for c in one.choices)


def test_logprobs(engine_factory):
    eng = engine_factory()
    res = run(eng.generate([GenerationRequest("def", SamplingParams(max_tokens=6, temperature=0, logprobs=2))]))
    choice = res[0].choices[0]
    assert [lp.token_id for lp in choice.logprobs] == choice.token_ids
    for lp in choice.logprobs:
        assert lp.logprob <= 0 and len(lp.top_logprobs) == 2
        assert lp.logprob == pytest.approx(max(lp.top_logprobs.values()), abs=1e-5)


def test_stream_equals_generate(tiny, engine_factory):
    _, adapters = tiny
    eng = engine_factory()
    ref = AdapterRef("a1", str(adapters[1]))
    params = SamplingParams(max_tokens=16, temperature=0, n=2)
    whole = run(eng.generate([GenerationRequest(PROMPTS[1], params, ref)]))[0]

    async def collect():
        texts, reasons = {0: "", 1: ""}, {}
        async for delta in eng.stream(GenerationRequest(PROMPTS[1], params, ref)):
            texts[delta.index] += delta.text
            if delta.finish_reason:
                reasons[delta.index] = delta.finish_reason
        return texts, reasons

    texts, reasons = run(collect())
    assert texts == {c.index: c.text for c in whole.choices}
    assert reasons == {c.index: c.finish_reason for c in whole.choices}


def test_requests_join_a_running_batch(engine_factory):
    """A short request submitted while a long one runs finishes first (iteration-level batching)."""
    eng = engine_factory()
    long_params = SamplingParams(max_tokens=150, temperature=1.0, seed=1, stop=[])
    short_params = SamplingParams(max_tokens=2, temperature=0)

    async def scenario():
        done: dict[str, float] = {}

        async def timed(name, req):
            await eng.generate([req])
            done[name] = time.perf_counter()

        long_task = asyncio.create_task(timed("long", GenerationRequest("a", long_params)))
        await asyncio.sleep(0.05)
        await timed("short", GenerationRequest("b", short_params))
        running_after_short = eng.stats().running
        await long_task
        return done, running_after_short

    done, running = run(scenario())
    assert done["short"] < done["long"]


def test_concurrent_streams_and_cancel(engine_factory):
    eng = engine_factory()

    async def scenario():
        agen = eng.stream(GenerationRequest("def", SamplingParams(max_tokens=200, temperature=1.0)))
        async for _ in agen:
            break
        await agen.aclose()  # client went away
        res = await eng.generate([GenerationRequest(p, GREEDY) for p in PROMPTS])
        await asyncio.sleep(0.05)
        return res

    res = run(scenario())
    assert len(res) == 4 and eng.stats().running == 0
