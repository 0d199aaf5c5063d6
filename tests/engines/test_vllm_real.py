"""Real vLLM (CPU build, fp32) against the local engine: same greedy tokens with two adapters.

Needs ``.venv-vllm`` (deploy/vllm/setup-cpu.sh) and the prepared bundled model; skipped otherwise.
Starts vLLM on loopback with deploy/vllm/run-cpu.sh (cold start about a minute on 2 cores).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from service.engines import AdapterRef, GenerationRequest, SamplingParams
from service.engines.local import LocalEngine
from service.engines.vllm import VllmEngine

from .tiny import make_adapter

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("VLLM_VENV", ROOT / ".venv-vllm"))
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROMPTS = ["def fibonacci(n):", "import numpy as np\n", "The capital of France is", "class Stack:\n    def"]

# vLLM cold starts take minutes on 2 cores: a longer limit than the suite's 600 s per test.
pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800),
              pytest.mark.skipif(not (VENV / "bin" / "python").exists(), reason=".venv-vllm is absent")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    from hypernet.basemodel import prepare_bundled

    return prepare_bundled()


@pytest.fixture(scope="module")
def vllm_url(model_dir, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    env = dict(os.environ, MAX_LORAS="4", MAX_MODEL_LEN="1024")
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", str(ROOT / "deploy/vllm/run-cpu.sh"), str(model_dir), str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 420
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.fail(f"vLLM did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # only the group this fixture started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_vllm_matches_local_engine(model_dir, vllm_url, tmp_path):
    adapters = [AdapterRef(f"test/repo{i}@v1", str(make_adapter(model_dir, tmp_path / f"a{i}", seed=7 + i,
                                                                targets=TARGETS, std=0.05)))
                for i in range(2)]
    refs = [adapters[0], adapters[1], None, adapters[0]]
    params = SamplingParams(max_tokens=12, temperature=0.0)
    reqs = [GenerationRequest(p, params, r) for p, r in zip(PROMPTS, refs, strict=False)]

    async def run_both():
        vllm = VllmEngine(vllm_url, max_loras=4, base_model_path=str(model_dir),
                          zero_adapter_path=str(tmp_path / "zero"))
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
