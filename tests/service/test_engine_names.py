"""The two stale-adapter cases of issue 20, through the API and the vLLM engine against a fake vLLM server.

1. A repository deleted and another registered under the same name: the new one's adapter is served (the engine-side
   name carries the artifact's digest), and the deleted one's names are unloaded from the engine.
2. A fresh data dir against a vLLM that still holds a name: vLLM's "already loaded" is checked against the folder, and
   the name is loaded again from the new data dir's folder.

The fake vLLM answers ``"<model>:ok"``, so the text shows which engine-side name served each request.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import make_git_repo, wait_job
from tests.engines.fakevllm import FakeVllm


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the engine side is what is under test here


@pytest.fixture
def fake() -> FakeVllm:
    return FakeVllm()


@pytest.fixture
def vllm_app(monkeypatch, make_settings, service_checkpoint, fake, client_for):
    """Start the app with engine=vllm wired to the fake vLLM; extra setting overrides as keywords."""
    import service.bootstrap as bootstrap
    from service.engines.vllm import VllmEngine
    from service.models import base_model_dir

    def make_engine(settings):
        return VllmEngine("http://vllm.test", max_loras=4, base_model_path=str(base_model_dir(settings)),
                          zero_adapter_path=str(settings.artifact_dir / "zero-adapter"),
                          transport=httpx.MockTransport(fake))

    monkeypatch.setattr(bootstrap, "make_serving_engine", make_engine)

    def _start(**overrides):
        return client_for(engine="vllm", hypernet_checkpoint=service_checkpoint, **overrides)

    return _start


def _register(client, url: Path, name: str) -> dict:
    resp = client.post("/repos", json={"url": str(url), "name": name})
    assert resp.status_code == 202, resp.text
    assert wait_job(client, resp.json()["job"]["id"])["status"] == "succeeded"
    repo = resp.json()["repository"]
    return client.get(f"/repos/{repo['id']}/versions").json()[0]


def _complete(client, model: str) -> dict:
    resp = client.post("/v1/completions", json={"model": model, "prompt": "def ", "max_tokens": 2})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_deleted_repository_name_reused_serves_the_new_adapter(vllm_app, fake, tmp_path) -> None:
    client = vllm_app()
    make_git_repo(tmp_path / "one", {"one/mod.py": "def first_thing(a: int) -> int:\n    return a + 1\n"})
    make_git_repo(tmp_path / "two", {"two/other.py": "class SecondThing:\n    value: str = 'x'\n"})
    old = _register(client, tmp_path / "one", "alpha")
    old_name = f"alpha@v1+{old['artifact_sha256'][:16]}"
    out = _complete(client, "alpha")
    assert out["model"] == "alpha@v1" and out["choices"][0]["text"] == f"{old_name}:ok"
    assert old_name in fake.loaded

    assert client.delete("/repos/alpha").status_code == 204
    assert old_name not in fake.loaded  # deleting a repository unloads its adapters
    assert ("unload", old_name) in fake.calls

    new = _register(client, tmp_path / "two", "alpha")
    assert new["artifact_sha256"] != old["artifact_sha256"]
    out = _complete(client, "alpha")
    new_name = f"alpha@v1+{new['artifact_sha256'][:16]}"
    assert out["model"] == "alpha@v1" and out["choices"][0]["text"] == f"{new_name}:ok"
    assert client.get("/healthz").json()["engine"]["loaded"] == [new_name]


def test_fresh_data_dir_against_a_running_vllm_loads_its_own_folder(vllm_app, fake, tmp_path) -> None:
    make_git_repo(tmp_path / "one", {"one/mod.py": "def first_thing(a: int) -> int:\n    return a + 1\n"})
    first = vllm_app(data_dir=tmp_path / "data-1")
    v1 = _register(first, tmp_path / "one", "alpha")
    name = f"alpha@v1+{v1['artifact_sha256'][:16]}"
    _complete(first, "alpha")
    first_root = fake.loaded[name]
    assert first_root.startswith(str(tmp_path / "data-1"))

    # a second service with a fresh data dir, same vLLM: same bytes, same name, but vLLM's copy comes from data-1
    second = vllm_app(data_dir=tmp_path / "data-2")
    v2 = _register(second, tmp_path / "one", "alpha")
    assert v2["artifact_sha256"] == v1["artifact_sha256"]
    out = _complete(second, "alpha")
    assert out["choices"][0]["text"] == f"{name}:ok"
    assert fake.loaded[name].startswith(str(tmp_path / "data-2"))  # loaded again from this service's folder
    assert ("unload", name) in fake.calls
