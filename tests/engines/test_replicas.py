"""Several vLLM replicas behind `ReplicatedVllmEngine`, against fake vLLM servers: adapter affinity by rendezvous
hashing, stability when a replica leaves, failover when one is down, per-replica health."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from service.engines import AdapterRef, EngineUnavailable, GenerationRequest, SamplingParams
from service.engines.replicas import ReplicatedVllmEngine, rendezvous_order
from service.engines.vllm import VllmEngine
from service.settings import Settings

from .fakevllm import FakeVllm

URLS = [f"http://vllm-{i}.test:8000" for i in range(3)]
NAMES = [f"org/repo{i}@v1+{i:016x}" for i in range(60)]


def req(adapter: str | None) -> GenerationRequest:
    ref = AdapterRef(adapter, f"/adapters/{adapter}") if adapter else None
    return GenerationRequest("hi", SamplingParams(max_tokens=2), ref)


@pytest.fixture
def cluster(tmp_path):
    """(router, {url: FakeVllm}) over three fake replicas (plain base: no zero adapter)."""
    fakes = {url: FakeVllm() for url in URLS}
    engines = [VllmEngine(url, transport=httpx.MockTransport(fake), use_zero_adapter=False, retry_after=2,
                          served_model="base-model", max_loras=64) for url, fake in fakes.items()]
    return ReplicatedVllmEngine(engines, cooldown=30), fakes


def served_by(fakes: dict[str, FakeVllm]) -> dict[str, str]:
    """adapter name -> the replica that answered its completion."""
    return {name: url for url, fake in fakes.items() for kind, name in fake.calls if kind == "complete"}


def test_rendezvous_spreads_and_is_stable_when_a_replica_leaves():
    owners = {n: rendezvous_order(n, URLS)[0] for n in NAMES}
    counts = Counter(owners.values())
    assert set(counts) == set(URLS) and min(counts.values()) >= 10, counts  # 60 names over 3: none starved
    assert all(rendezvous_order(n, list(reversed(URLS)))[0] == owners[n] for n in NAMES)  # order of the list is moot
    survivors = URLS[:2]
    for n in NAMES:  # only the names the removed replica owned move, each to its second choice
        new = rendezvous_order(n, survivors)[0]
        if owners[n] != URLS[2]:
            assert new == owners[n]
        else:
            assert new == rendezvous_order(n, URLS)[1]


def test_each_adapter_is_registered_and_served_on_its_own_replica(cluster):
    router, fakes = cluster
    names = NAMES[:12]
    results = asyncio.run(router.generate([req(n) for n in names] + [req(n) for n in names]))
    assert [r.choices[0].text for r in results] == [f"{n}:ok" for n in names * 2]
    served = served_by(fakes)
    assert served == {n: router.replica_for(n) for n in names}
    for url, fake in fakes.items():  # registered once, and only where served
        loads = Counter(name for kind, name in fake.calls if kind == "load")
        assert set(loads) == {n for n in names if served[n] == url} and set(loads.values()) <= {1}
    assert len(set(served.values())) >= 2
    assert sorted(router.loaded()) == sorted(names)


def test_base_requests_spread_over_replicas(cluster):
    router, fakes = cluster
    asyncio.run(router.generate([req(None) for _ in range(30)]))
    per_replica = {url: sum(1 for kind, _ in fake.calls if kind == "complete") for url, fake in fakes.items()}
    assert all(n >= 3 for n in per_replica.values()), per_replica


def test_a_down_replica_fails_over_to_the_next_in_hash_order(cluster):
    router, fakes = cluster
    victim = URLS[0]
    mine = [n for n in NAMES if router.replica_for(n) == victim][:4]
    others = [n for n in NAMES if router.replica_for(n) != victim][:4]
    asyncio.run(router.generate([req(n) for n in mine + others]))
    fakes[victim].down = True  # connection refused from now on
    for fake in fakes.values():
        fake.calls.clear()
    results = asyncio.run(router.generate([req(n) for n in mine + others]))
    assert [r.choices[0].text for r in results] == [f"{n}:ok" for n in mine + others]
    served = served_by(fakes)
    for n in mine:  # the second choice took it over and registered it on demand
        assert served[n] == rendezvous_order(n, URLS)[1]
        assert ("load", n) in fakes[served[n]].calls
    for n in others:  # untouched
        assert served[n] == router.replica_for(n)
    assert router.state[victim].down_since is not None and router.state[victim].failovers >= 1
    # while it cools down the victim is tried last: no new connection attempt for its adapters
    calls_before = len(fakes[victim].calls)
    asyncio.run(router.generate([req(mine[0])]))
    assert len(fakes[victim].calls) == calls_before


def test_a_replica_answering_503_fails_over_too(cluster):
    router, fakes = cluster
    name = NAMES[0]
    first, second = rendezvous_order(name, URLS)[:2]

    def unavailable(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": {"message": "engine dead"}})

    router.engines[first]._client._transport = httpx.MockTransport(unavailable)
    (result,) = asyncio.run(router.generate([req(name)]))
    assert result.choices[0].text == f"{name}:ok" and ("complete", name) in fakes[second].calls


def test_every_replica_down_is_503_with_retry_after(cluster):
    router, fakes = cluster
    for fake in fakes.values():
        fake.down = True
    with pytest.raises(EngineUnavailable) as err:
        asyncio.run(router.generate([req(NAMES[0])]))
    assert err.value.retry_after == 2 and "every vLLM replica failed" in str(err.value)


def test_stream_fails_over_before_the_first_delta(cluster):
    router, fakes = cluster
    name = NAMES[1]
    fakes[router.replica_for(name)].down = True

    async def collect() -> str:
        return "".join([d.text async for d in router.stream(req(name))])

    assert asyncio.run(collect()) == f"{name}:ok"
    assert ("complete", name) in fakes[rendezvous_order(name, URLS)[1]].calls


def test_health_and_stats_report_each_replica(cluster):
    router, fakes = cluster
    asyncio.run(router.generate([req(n) for n in NAMES[:6]]))
    health = asyncio.run(router.health())
    assert health.ok and health.detail.startswith("3 of 3") and len(health.replicas or []) == 3
    fakes[URLS[1]].down = True
    health = asyncio.run(router.health())
    assert health.ok and health.detail.startswith("2 of 3") and URLS[1] in health.detail
    down = {r["url"]: r["ok"] for r in health.replicas or []}
    assert down == {URLS[0]: True, URLS[1]: False, URLS[2]: True}
    stats = router.stats()
    assert [r["url"] for r in stats.replicas or []] == URLS
    assert sum(r["served"] for r in stats.replicas or []) == 6
    assert sum(stats.requests_per_adapter.values()) == 6
    for fake in fakes.values():
        fake.down = True
    assert not asyncio.run(router.health()).ok


def test_unload_reaches_every_replica_that_holds_the_adapter(cluster):
    router, fakes = cluster
    name = NAMES[2]
    asyncio.run(router.ensure_loaded(name, "/adapters/x"))
    other = rendezvous_order(name, URLS)[1]
    asyncio.run(router.engines[other].ensure_loaded(name, "/adapters/x"))  # as after a failover
    asyncio.run(router.unload(name))
    assert all(name not in fake.loaded for fake in fakes.values())
    assert name not in router.loaded()


def test_settings_take_a_list_of_replicas(monkeypatch):
    monkeypatch.setenv("CODE2LORA_VLLM_URLS", "http://a:8000, http://b:8000/")
    assert Settings(_env_file=None).vllm_replicas() == ["http://a:8000", "http://b:8000"]
    monkeypatch.setenv("CODE2LORA_VLLM_URLS", '["http://a:8000", "http://b:8000"]')
    assert Settings(_env_file=None).vllm_replicas() == ["http://a:8000", "http://b:8000"]
    monkeypatch.delenv("CODE2LORA_VLLM_URLS")
    monkeypatch.setenv("CODE2LORA_VLLM_URL", "http://one:8001")
    assert Settings(_env_file=None).vllm_replicas() == ["http://one:8001"]


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the service fixtures' backend parameter: the engine side is under test here


def test_healthz_and_engine_page_show_each_replica(cluster, client_for):
    from tests.admin.helpers import SECURE, login

    router, fakes = cluster
    client = client_for(**SECURE)
    assert login(client, "admin", "admin-pw").status_code == 303
    client.app.state.c2l.serving_engine = router
    try:
        asyncio.run(router.generate([req(n) for n in NAMES[:4]]))
        fakes[URLS[2]].down = True
        health = client.get("/healthz").json()
        page = client.get("/admin/engine").text
    finally:
        client.app.state.c2l.serving_engine = None
    assert health["status"] == "degraded" and health["engine"]["ok"] is True
    assert {r["url"]: r["ok"] for r in health["engine"]["replicas"]} == {URLS[0]: True, URLS[1]: True, URLS[2]: False}
    for url in URLS:
        assert f'data-replica="{url}"' in page
    assert page.count('class="badge st-failed"') == 1  # the replica found down by /healthz
