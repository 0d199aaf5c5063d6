"""Real vLLM (CPU build, fp32, started with ``--api-key``) against the local engine: same greedy tokens with two
adapters; the two stale-adapter cases of issue 20 serve the right adapter; what the key guards.

Needs ``.venv-vllm`` (deploy/vllm/setup-cpu.sh) and the prepared bundled model; skipped otherwise.
Starts one vLLM on loopback with deploy/vllm/run-cpu.sh for the module (cold start 1-3 minutes on 2 idle cores;
CODE2LORA_TEST_VLLM_START_S raises the 420 s limit on a busy machine), or uses the one at CODE2LORA_TEST_VLLM_URL
(started with ``--api-key c2l-test-vllm-key`` and MAX_LORAS=4).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from service.engines import AdapterRef, EngineAuthFailed, GenerationRequest, SamplingParams
from service.engines.local import LocalEngine
from service.engines.vllm import VllmEngine
from testkit.vllm import VENV, start_vllm

from .tiny import make_adapter

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROMPTS = ["def fibonacci(n):", "import numpy as np\n", "The capital of France is", "class Stack:\n    def"]
API_KEY = "c2l-test-vllm-key"  # the module's vLLM runs with --api-key

# vLLM cold starts take minutes on 2 cores: a longer limit than the suite's 600 s per test.
pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800),
              pytest.mark.skipif(not (VENV / "bin" / "python").exists(), reason=".venv-vllm is absent")]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    from hypernet.basemodel import prepare_bundled

    return prepare_bundled()


@pytest.fixture(scope="module")
def vllm_url(model_dir, tmp_path_factory):
    external = os.environ.get("CODE2LORA_TEST_VLLM_URL")
    if external:  # a vLLM already running: deploy/vllm/run-cpu.sh MODEL PORT --api-key <API_KEY>, MAX_LORAS=4
        yield external.rstrip("/")
        return
    server = start_vllm(model_dir, tmp_path_factory.mktemp("vllm") / "vllm.log", ["--api-key", API_KEY],
                        env={"MAX_LORAS": "4", "MAX_MODEL_LEN": "1024"})
    try:
        try:
            server.wait_ready(time.monotonic() + float(os.environ.get("CODE2LORA_TEST_VLLM_START_S", "420")))
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield server.url
    finally:
        server.kill()


def test_vllm_matches_local_engine(model_dir, vllm_url, tmp_path):
    adapters = [AdapterRef(f"test/repo{i}@v1", str(make_adapter(model_dir, tmp_path / f"a{i}", seed=7 + i,
                                                                targets=TARGETS, std=0.05)))
                for i in range(2)]
    refs = [adapters[0], adapters[1], None, adapters[0]]
    params = SamplingParams(max_tokens=12, temperature=0.0)
    reqs = [GenerationRequest(p, params, r) for p, r in zip(PROMPTS, refs, strict=False)]

    async def run_both():
        vllm = VllmEngine(vllm_url, max_loras=4, base_model_path=str(model_dir),
                          zero_adapter_path=str(tmp_path / "zero"), api_key=API_KEY)
        local = LocalEngine(model_path=str(model_dir), slots=4)
        try:
            remote = await vllm.generate(reqs)
            mine = await local.generate(reqs)
            same_prompt = await vllm.generate([GenerationRequest(PROMPTS[0], params, r) for r in (None, *adapters)])
            return remote, mine, same_prompt, vllm.loaded()
        finally:
            await vllm.aclose()
            await local.aclose()

    remote, mine, same_prompt, loaded = asyncio.run(run_both())
    assert [r.choices[0].text for r in remote] == [m.choices[0].text for m in mine]
    assert [r.choices[0].token_ids for r in remote] == [m.choices[0].token_ids for m in mine]
    assert len({r.choices[0].text for r in same_prompt}) == 3  # adapters change the output
    assert sorted(loaded) == sorted(a.id for a in adapters)


def test_what_the_vllm_api_key_guards(vllm_url, model_dir, tmp_path):
    """docs/DEPLOY.md says which routes vLLM's --api-key guards on the supported version; this checks it."""
    adapter = make_adapter(model_dir, tmp_path / "probe", seed=3, targets=TARGETS, std=0.05)
    key = {"Authorization": f"Bearer {API_KEY}"}
    guarded = [("GET", "/v1/models", None), ("POST", "/v1/completions", {"model": "x", "prompt": "a"}),
               ("POST", "/v1/load_lora_adapter", {"lora_name": "probe", "lora_path": str(adapter)}),
               ("POST", "/v1/unload_lora_adapter", {"lora_name": "probe"})]
    for method, path, body in guarded:
        assert httpx.request(method, vllm_url + path, json=body, timeout=30).status_code == 401, path
    assert httpx.get(vllm_url + "/health", timeout=30).status_code == 200
    # the SageMaker-style adapter routes are NOT guarded: a load and an unload without the key succeed
    loaded = httpx.post(vllm_url + "/adapters", json={"name": "probe-open", "src": str(adapter)}, timeout=60)
    assert loaded.status_code == 200, loaded.text
    models = httpx.get(vllm_url + "/v1/models", headers=key, timeout=30).json()["data"]
    assert "probe-open" in {m["id"] for m in models}
    removed = httpx.delete(vllm_url + "/adapters/probe-open", timeout=60)
    assert removed.status_code == 200, removed.text
    models = httpx.get(vllm_url + "/v1/models", headers=key, timeout=30).json()["data"]
    assert "probe-open" not in {m["id"] for m in models}

    async def with_key(api_key):
        eng = VllmEngine(vllm_url, base_model_path=str(model_dir), zero_adapter_path=str(tmp_path / "zero"),
                         api_key=api_key)
        try:
            health = await eng.health()
            try:
                await eng.generate([GenerationRequest("def ", SamplingParams(max_tokens=2, temperature=0),
                                                      AdapterRef("probe@v1+0123456789abcdef", str(adapter)))])
                error = None
            except EngineAuthFailed as exc:
                error = exc
            return health, error
        finally:
            await eng.aclose()

    for wrong in (None, "not-the-key"):
        health, error = asyncio.run(with_key(wrong))
        assert not health.ok and "401" in health.detail, health
        assert error is not None and "CODE2LORA_VLLM_API_KEY" in str(error)
    health, error = asyncio.run(with_key(API_KEY))
    assert health.ok and error is None


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the service tests' backend parameter: the engine side is under test here


def test_stale_adapter_cases_serve_the_right_adapter(model_dir, vllm_url, make_settings, tmp_path):
    """Issue 20's two stale cases against the real vLLM, each answer compared with the local engine on the artifact:
    a fresh data dir against a vLLM that holds the old data dir's adapters, and a repository deleted and another one
    registered under its name. Adapters must change the output (logprobs differ from base)."""
    from fastapi.testclient import TestClient

    from hypernet.checkpoint import shipped_checkpoint
    from service.api.app import create_app
    from tests.conftest import LOOPBACK_CLIENT, make_git_repo, wait_job

    make_git_repo(tmp_path / "one", {"one/geometry.py": "def triangle_area(base: float, height: float) -> float:\n"
                                     "    return 0.5 * base * height\n\n\ndef square_area(side: float) -> float:\n"
                                     "    return side * side\n"})
    make_git_repo(tmp_path / "two", {"two/http_client.py": "class RetryingSession:\n    def fetch_json(self, url: str)"
                                     " -> dict:\n        return {}\n\n\ndef build_session() -> RetryingSession:\n"
                                     "    return RetryingSession()\n"})
    prompt = "def compute("
    key = {"Authorization": f"Bearer {API_KEY}"}
    clients: list[TestClient] = []

    def start(data: Path) -> TestClient:
        settings = make_settings(data_dir=data, engine="vllm", vllm_url=vllm_url, vllm_api_key=API_KEY,
                                 base_model_path=model_dir, model_cache=model_dir.parent,
                                 hypernet_checkpoint=shipped_checkpoint(), eval_enabled=False, engine_slots=4)
        c = TestClient(create_app(settings), client=LOOPBACK_CLIENT)
        c.__enter__()
        clients.append(c)
        return c

    def register(c: TestClient, url: Path) -> dict:
        resp = c.post("/repos", json={"url": str(url), "name": "alpha"})
        assert resp.status_code == 202, resp.text
        assert wait_job(c, resp.json()["job"]["id"], timeout=900)["status"] == "succeeded"
        return c.get(f"/repos/{resp.json()['repository']['id']}/versions").json()[0]

    def complete(c: TestClient, model: str) -> dict:
        resp = c.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0,
                                               "logprobs": 0})
        assert resp.status_code == 200, resp.text
        return resp.json()["choices"][0]

    def vllm_roots() -> dict[str, str]:
        cards = httpx.get(vllm_url + "/v1/models", headers=key, timeout=30).json()["data"]
        return {c["id"]: c.get("root") for c in cards}

    def expected(data: Path, sha: str) -> str:
        """The local engine's greedy answer with the artifact (same tokens as vLLM in fp32)."""
        ref = AdapterRef(f"expect-{sha[:16]}", str(data / "artifacts" / sha))

        async def run() -> str:
            local = LocalEngine(model_path=str(model_dir), slots=2)
            try:
                res = await local.generate([GenerationRequest(prompt, SamplingParams(max_tokens=8, temperature=0),
                                                              ref)])
                return res[0].choices[0].text
            finally:
                await local.aclose()

        return asyncio.run(run())

    try:
        first = start(tmp_path / "data-1")
        one = register(first, tmp_path / "one")
        assert complete(first, "alpha")["text"] == expected(tmp_path / "data-1", one["artifact_sha256"])
        first.__exit__(None, None, None)
        clients.remove(first)

        # 1. a fresh data dir against the running vLLM, "alpha" now another repository: its adapter is served
        second = start(tmp_path / "data-2")
        two = register(second, tmp_path / "two")
        assert two["artifact_sha256"] != one["artifact_sha256"]
        got = complete(second, "alpha")
        assert got["text"] == expected(tmp_path / "data-2", two["artifact_sha256"])
        base = complete(second, "base")
        diffs = [abs(a - b) for a, b in zip(got["logprobs"]["token_logprobs"], base["logprobs"]["token_logprobs"],
                                            strict=False)]
        assert got["text"] != base["text"] or max(diffs) > 1e-3, (got, base)  # the adapter changes the output

        # 2. delete "alpha" and register the first repository under the same name: its adapter, not the deleted one
        two_name = f"alpha@v1+{two['artifact_sha256'][:16]}"
        assert two_name in vllm_roots()
        assert second.delete("/repos/alpha").status_code == 204
        assert two_name not in vllm_roots()  # deleting a repository unloads its adapters from vLLM
        again = register(second, tmp_path / "one")
        sha = again["artifact_sha256"]  # the same bytes as in data-1 when generation is deterministic
        expect_one = expected(tmp_path / "data-2", sha)
        import shutil

        shutil.rmtree(tmp_path / "data-1")  # the old data dir is gone: vLLM must not rely on its folder
        assert complete(second, "alpha")["text"] == expect_one
        roots = vllm_roots()
        # same name as data-1 loaded: vLLM's "already loaded" was checked and the name loaded from data-2
        assert roots[f"alpha@v1+{sha[:16]}"] == str(tmp_path / "data-2" / "artifacts" / sha)
        assert "plain" in second.get("/healthz").json()["engine"]["detail"] or \
            "zero adapter" in second.get("/healthz").json()["engine"]["detail"]  # the base probe decided
    finally:
        for c in clients:
            c.__exit__(None, None, None)
