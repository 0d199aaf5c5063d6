"""Two real vLLM CPU replicas on loopback behind `ReplicatedVllmEngine` (issue 20): requests for 8 adapters spread
over both, every answer equal to the local engine's for the same adapter (greedy, fp32), one replica killed while
requests are in flight with no failed request (failover to the other replica, which registers the adapters on
demand). Also checks the service's resolver mode (vLLM's filesystem LoRA resolver, VLLM_LORA_RESOLVER_CACHE_DIR) on the
CPU build.

Needs ``.venv-vllm`` (deploy/vllm/setup-cpu.sh) and the prepared bundled model; skipped otherwise. Both replicas
start at once (2-5 minutes on 2 busy cores; CODE2LORA_TEST_VLLM_START_S raises the 600 s limit).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from pathlib import Path

import pytest

from service.engines import AdapterRef, GenerationRequest, GenerationResult, SamplingParams
from service.engines.local import LocalEngine
from service.engines.replicas import ReplicatedVllmEngine
from service.engines.vllm import VllmEngine
from testkit.vllm import VllmServer, start_vllm, vllm_installed

from .tiny import make_adapter

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROMPTS = ["def fibonacci(n):", "import numpy as np\n", "The capital of France is", "class Stack:\n    def",
           "async def fetch(url):", "SELECT name FROM users WHERE", "# parse the config file\n", "func main() {\n"]
PARAMS = SamplingParams(max_tokens=8, temperature=0.0)
MAX_LORAS = 10  # each replica can hold all 8 adapters once the other one is gone

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800),
              pytest.mark.skipif(not vllm_installed(), reason=".venv-vllm is absent")]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    from hypernet.basemodel import prepare_bundled

    return prepare_bundled()


@pytest.fixture(scope="module")
def adapter_dir(model_dir, tmp_path_factory) -> Path:
    """8 adapter folders (random, small B: they change the output without wrecking it), named a0..a7."""
    root = tmp_path_factory.mktemp("adapters")
    for i in range(8):
        make_adapter(model_dir, root / f"a{i}", seed=40 + i, targets=TARGETS, std=0.05)
    return root


@pytest.fixture(scope="module")
def replicas(model_dir, adapter_dir, tmp_path_factory):
    """Two vLLM CPU servers on free loopback ports, started together; the filesystem resolver reads adapter_dir."""
    logs = tmp_path_factory.mktemp("vllm-replicas")
    env = {"MAX_LORAS": str(MAX_LORAS), "MAX_MODEL_LEN": "512", "VLLM_LORA_RESOLVER_CACHE_DIR": str(adapter_dir)}
    servers = [start_vllm(model_dir, logs / f"replica{i}.log", env=env) for i in range(2)]
    try:
        deadline = time.monotonic() + float(os.environ.get("CODE2LORA_TEST_VLLM_START_S", "600"))
        for server in servers:
            try:
                server.wait_ready(deadline)
            except RuntimeError as exc:
                pytest.fail(str(exc))
        yield servers
    finally:
        for server in servers:
            server.kill()


def names_spread_over(router: ReplicatedVllmEngine, per_replica: int) -> list[str]:
    """Engine-side names, ``per_replica`` owned by each replica (the ports, so the hash order, differ per run)."""
    wanted = {url: per_replica for url in router.engines}
    names: list[str] = []
    k = 0
    while any(wanted.values()):
        name = f"replicas/repo{k}@v1+{hashlib.sha256(str(k).encode()).hexdigest()[:16]}"
        owner = router.replica_for(name)
        if wanted[owner]:
            wanted[owner] -= 1
            names.append(name)
        k += 1
    return names


def texts(results: list[GenerationResult]) -> list[tuple[str, tuple[int, ...]]]:
    return [(r.choices[0].text, tuple(r.choices[0].token_ids)) for r in results]


def test_two_replicas_spread_match_local_and_survive_a_kill(model_dir, adapter_dir, replicas: list[VllmServer]):
    # a generous read timeout: on a shared 2-core machine one step of the survivor's doubled batch can take a minute
    engines = [VllmEngine(s.url, max_loras=MAX_LORAS, base_model_path=str(model_dir), use_zero_adapter=False,
                          retry_after=1, timeout=600) for s in replicas]
    router = ReplicatedVllmEngine(engines, cooldown=30)
    names = names_spread_over(router, 4)
    refs = [AdapterRef(name, str(adapter_dir / f"a{i}")) for i, name in enumerate(names)]
    reqs = [GenerationRequest(PROMPTS[i], PARAMS, ref) for i, ref in enumerate(refs)]
    victim, survivor = replicas[0], replicas[1]

    async def local_answers() -> list[GenerationResult]:
        local = LocalEngine(model_path=str(model_dir), slots=8)
        try:
            return await local.generate(reqs)
        finally:
            await local.aclose()

    expected = texts(asyncio.run(local_answers()))
    assert len(set(expected)) == 8

    async def run() -> dict[str, object]:
        try:
            first = await router.generate(reqs)
            per_replica = {url: sorted(e.stats().requests_per_adapter) for url, e in router.engines.items()}
            # the load that the kill hits: 2 rounds of the 8 adapters; the victim dies once it has requests in flight
            load = asyncio.ensure_future(router.generate(reqs * 2))
            while sum(router.engines[victim.url]._inflight.values()) == 0 and not load.done():
                await asyncio.sleep(0.005)
            await asyncio.to_thread(victim.kill, signal.SIGKILL)
            during = await load
            health = await router.health()
            return {"first": first, "per_replica": per_replica, "during": during,
                    "health": health, "survivor_loaded": router.engines[survivor.url].loaded()}
        finally:
            await router.aclose()

    out = asyncio.run(run())
    assert texts(out["first"]) == expected  # type: ignore[arg-type]
    # spread: each replica served exactly the 4 adapters that hash to it
    assert out["per_replica"] == {url: sorted(n for n in names if router.replica_for(n) == url)
                                  for url in router.engines}
    assert texts(out["during"]) == expected * 2  # type: ignore[arg-type]  # no failed request, right adapters
    assert router.state[victim.url].failovers >= 1  # requests in flight on the killed replica moved over
    assert sorted(out["survivor_loaded"]) == sorted(names)  # it registered the victim's adapters on demand
    health = out["health"]
    assert health.ok and health.detail.startswith("1 of 2")  # type: ignore[attr-defined]

    # vLLM's own filesystem resolver on the CPU build (CODE2LORA_VLLM_LORA_RESOLVER): adapters asked for by folder name,
    # never loaded with /v1/load_lora_adapter, resolved by the survivor from VLLM_LORA_RESOLVER_CACHE_DIR
    async def resolved() -> tuple[list[GenerationResult], list[str]]:
        engine = VllmEngine(survivor.url, max_loras=MAX_LORAS, base_model_path=str(model_dir), use_zero_adapter=False,
                            timeout=600, resolver_dir=str(adapter_dir))
        try:
            got = await engine.generate([reqs[3], reqs[6]])
            cards = (await engine._client.get("/v1/models")).json()["data"]
            return got, [c["id"] for c in cards]
        finally:
            await engine.aclose()

    got, ids = asyncio.run(resolved())
    assert texts(got) == [expected[3], expected[6]]
    assert {"a3", "a6"} <= set(ids)  # vLLM knows them by folder name: its resolver loaded them
