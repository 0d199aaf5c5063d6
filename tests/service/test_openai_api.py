"""The OpenAI-compatible API, driven by the official `openai` client, on the tiny model and two repositories."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.conftest import make_git_repo, wait_job

REPO_A = {"calc/ops.py": "def add_numbers(a: int, b: int) -> int:\n    return a + b\n\n\n"
                         "def multiply_numbers(a: int, b: int) -> int:\n    return a * b\n"}
REPO_B = {"web/http.py": "class RequestRouter:\n    def route(self, path: str) -> str:\n        return path\n\n\n"
                         "def parse_headers(raw: bytes) -> dict:\n    return {}\n"}


@pytest.fixture
def served(client_for, service_checkpoint: Path, tmp_path: Path):
    client = client_for(engine="local", hypernet_checkpoint=service_checkpoint)
    for name, files in (("alpha", REPO_A), ("beta", REPO_B)):
        make_git_repo(tmp_path / name, files)
        resp = client.post("/repos", json={"url": str(tmp_path / name), "name": name})
        assert wait_job(client, resp.json()["job"]["id"])["status"] == "succeeded"
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0)
    return client, oai


def _complete(oai: openai.OpenAI, model: str, **kw) -> str:
    out = oai.completions.create(model=model, prompt="def ", max_tokens=8, temperature=0, **kw)
    return out.choices[0].text


def test_completions_differ_per_repository(served) -> None:
    _, oai = served
    base, a, b = _complete(oai, "base"), _complete(oai, "alpha"), _complete(oai, "beta")
    assert len({base, a, b}) == 3, (base, a, b)
    assert _complete(oai, "alpha") == a  # greedy is deterministic
    assert _complete(oai, "alpha@v1") == a
    out = oai.completions.create(model="alpha", prompt="def ", max_tokens=8, temperature=0)
    assert out.model == "alpha@v1" and out.usage.completion_tokens == 8 and out.usage.prompt_tokens > 0


def test_streaming_matches_non_streaming(served) -> None:
    _, oai = served
    expected = _complete(oai, "beta")
    chunks = list(oai.completions.create(model="beta", prompt="def ", max_tokens=8, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected


def test_chat_and_chat_streaming(served) -> None:
    _, oai = served
    msgs = [{"role": "user", "content": "add two numbers"}]
    out = oai.chat.completions.create(model="alpha", messages=msgs, max_tokens=6, temperature=0)
    text = out.choices[0].message.content
    assert out.choices[0].message.role == "assistant" and out.model == "alpha@v1" and len(text) > 0
    stream = oai.chat.completions.create(model="alpha", messages=msgs, max_tokens=6, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text


def test_sampling_options(served) -> None:
    _, oai = served
    out = oai.completions.create(model="alpha", prompt="x", max_tokens=5, temperature=1.0, n=3, seed=7, logprobs=1)
    assert len(out.choices) == 3 and all(c.logprobs is not None for c in out.choices)
    again = oai.completions.create(model="alpha", prompt="x", max_tokens=5, temperature=1.0, n=3, seed=7)
    assert [c.text for c in again.choices] == [c.text for c in out.choices]


def test_model_listing(served) -> None:
    _, oai = served
    ids = [m.id for m in oai.models.list().data]
    assert ids == ["base", "alpha", "alpha@v1", "beta", "beta@v1"]
    assert oai.models.retrieve("beta@v1").owned_by == "code2lora"


def test_errors_in_openai_shape(served, tmp_path: Path) -> None:
    client, oai = served
    with pytest.raises(openai.NotFoundError) as unknown:
        _complete(oai, "no-such-repo")
    assert unknown.value.body["type"] == "invalid_request_error" and unknown.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        _complete(oai, "alpha@v9")
    with pytest.raises(openai.BadRequestError):
        oai.completions.create(model="alpha", prompt="x", max_tokens=0)
    # a repository whose ingest failed has no adapter: 409 with its job status
    resp = client.post("/repos", json={"url": str(tmp_path / "alpha"), "branch": "missing", "name": "gamma"})
    wait_job(client, resp.json()["job"]["id"])
    with pytest.raises(openai.ConflictError) as conflict:
        _complete(oai, "gamma")
    assert conflict.value.body["job"]["status"] == "failed"


def test_api_keys(client_for, service_checkpoint: Path) -> None:
    from service.api.auth import hash_key

    client = client_for(engine="none", api_keys=[hash_key("k-123")])
    good = openai.OpenAI(base_url="http://testserver/v1", api_key="k-123", http_client=client, max_retries=0)
    bad = openai.OpenAI(base_url="http://testserver/v1", api_key="nope", http_client=client, max_retries=0)
    assert good.models.list().data[0].id == "base"
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.InternalServerError):  # no engine: 503
        good.completions.create(model="base", prompt="x", max_tokens=2)
    open_but_public = client_for(engine="none", host="0.0.0.0")
    assert open_but_public.get("/v1/models").status_code == 401


def test_management_routes_need_keys_too(client_for) -> None:
    from service.api.auth import hash_key

    client = client_for(engine="none", api_keys=[hash_key("k-9")])
    assert client.get("/repos").status_code == 401
    assert client.post("/repos", json={"url": "https://example.com/a.git"}).status_code == 401
    assert client.get("/jobs/x").status_code == 401
    ok = {"Authorization": "Bearer k-9"}
    assert client.get("/repos", headers=ok).status_code == 200
    assert client.get("/jobs/x", headers=ok).status_code == 404
    assert client.get("/healthz").status_code == 200  # probes stay open
    public = client_for(engine="none", host="0.0.0.0")
    assert public.get("/repos").status_code == 401
