"""vLLM killed under the service: completions answer 503 + Retry-After (never a 500 or a hang), and once
vLLM is back the service re-registers its adapters (vLLM forgot them) and serves again.

Two versions: a fast one against a stand-in vLLM process (tests/reliability/fake_vllm.py, always runs), and
the real vLLM CPU build (marked vllm + slow; skipped when .venv-vllm is absent).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import LOOPBACK_CLIENT, make_git_repo, wait_job
from tests.reliability.conftest import _wait_port, free_port

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("VLLM_VENV", ROOT / ".venv-vllm"))
COMPLETION = {"prompt": "def ", "max_tokens": 4, "temperature": 0}


@pytest.fixture
def backend() -> str:
    return "sqlite"


class Proc:
    """A server subprocess in its own process group, killable and restartable on the same port."""

    def __init__(self, argv: list[str], port: int, log: Path, env: dict[str, str] | None = None,
                 health_timeout: float = 30.0) -> None:
        self.argv, self.port, self.log, self.env, self.health_timeout = argv, port, log, env, health_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        deadline = time.monotonic() + self.health_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"server did not come up in {self.health_timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # only the group this test started
            self.proc.wait(30)
        self.proc = None
        _wait_port(self.port, up=False)


def _client(make_settings, **fields) -> TestClient:
    from service.api.app import create_app

    c = TestClient(create_app(make_settings(**fields)), raise_server_exceptions=False, client=LOOPBACK_CLIENT)
    c.__enter__()
    return c


def _kill_and_recover(client: TestClient, server: Proc, model: str, loads) -> None:
    ok = client.post("/v1/completions", json={"model": model, **COMPLETION})
    assert ok.status_code == 200, ok.text
    assert ok.json()["model"] == model + "@v1"

    server.kill()
    t0 = time.monotonic()
    down = client.post("/v1/completions", json={"model": model, **COMPLETION})
    assert time.monotonic() - t0 < 10  # an answer, not a hang
    assert down.status_code == 503, down.text
    assert int(down.headers["retry-after"]) >= 1
    assert down.json()["error"]["type"] in ("service_unavailable", "EngineUnavailable", "server_error")
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["engine"]["ok"] is False
    assert client.get("/repos").status_code == 200  # the rest of the service is unaffected

    before = loads()
    server.start()  # a fresh vLLM: it has forgotten every runtime-loaded adapter
    back = client.post("/v1/completions", json={"model": model, **COMPLETION})
    assert back.status_code == 200, back.text
    assert back.json()["model"] == model + "@v1"
    assert loads() > before  # the adapter was registered again
    assert client.get("/healthz").json()["engine"]["ok"] is True


def test_fake_vllm_killed_503_then_adapters_reloaded(make_settings, service_checkpoint: Path, tmp_path: Path) -> None:
    events = tmp_path / "vllm-events.jsonl"
    events.touch()
    port = free_port()
    server = Proc([sys.executable, str(Path(__file__).with_name("fake_vllm.py")), str(port), str(events)],
                  port, tmp_path / "fake-vllm.log")
    server.start()
    client = _client(make_settings, engine="vllm", vllm_url=server.url, hypernet_checkpoint=service_checkpoint)
    try:
        make_git_repo(tmp_path / "alpha", {"alpha/mod.py": "def alpha_fn(a: int) -> int:\n    return a\n"})
        created = client.post("/repos", json={"url": str(tmp_path / "alpha"), "name": "alpha"})
        assert wait_job(client, created.json()["job"]["id"])["status"] == "succeeded"

        def loads() -> int:
            return sum(1 for line in events.read_text().splitlines()
                       if json.loads(line).get("load", "").startswith("alpha@v1+"))

        _kill_and_recover(client, server, "alpha", loads)
    finally:
        client.__exit__(None, None, None)
        server.kill()


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(not (VENV / "bin" / "python").exists(), reason=".venv-vllm is absent")
@pytest.mark.timeout(1800)  # two vLLM cold starts
def test_real_vllm_killed_503_then_adapters_reloaded(make_settings, tmp_path: Path) -> None:
    from hypernet.basemodel import prepare_bundled

    model_dir = prepare_bundled()
    port = free_port()
    log = tmp_path / "vllm.log"
    server = Proc(["bash", str(ROOT / "deploy/vllm/run-cpu.sh"), str(model_dir), str(port)], port, log,
                  env=dict(os.environ, MAX_LORAS="4", MAX_MODEL_LEN="1024"), health_timeout=420)
    server.start()
    client = None
    try:
        client = _client(make_settings, engine="vllm", vllm_url=server.url, base_model_path=model_dir,
                         hypernet_checkpoint=None, model_cache=model_dir.parent)
        make_git_repo(tmp_path / "alpha", {"alpha/mod.py": "def alpha_fn(a: int) -> int:\n    return a\n"})
        created = client.post("/repos", json={"url": str(tmp_path / "alpha"), "name": "alpha"})
        assert wait_job(client, created.json()["job"]["id"], timeout=300)["status"] == "succeeded"

        def loads() -> int:  # vLLM logs each runtime LoRA load
            return log.read_text().count("alpha@v1")

        _kill_and_recover(client, server, "alpha", loads)
    finally:
        if client is not None:
            client.__exit__(None, None, None)
        server.kill()
