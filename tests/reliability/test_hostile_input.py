"""Unauthenticated input that used to end in a 500 (issue 21, Medium 7): each now gets a 4xx.

Deeply nested JSON to either webhook (parsed before any signature check), integers the database cannot hold in
`/repos/{id}`, in version numbers and in `model="x@v999..."`, and lone surrogates (valid JSON escapes, invalid
Unicode) in a `/repos` body or in a model name or prompt.
"""

from __future__ import annotations

import json

import pytest

from service.db.models import AdapterVersion, Repository

pytestmark = pytest.mark.timeout(120)

HUGE = "9" * 30
DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = ('{"a":' * 50_000 + "1" + "}" * 50_000).encode()
JSON = {"content-type": "application/json"}


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def client(client_for):
    c = client_for(engine="local", allow_local_repos=True)
    state = c.app.state.c2l
    with state.sessions() as s:  # one repository with a ready version, straight into the DB
        repo = Repository(name="good", url="/nonexistent/good", branch="", status="ready", webhook_secret="x",
                          active_version=1)
        s.add(repo)
        s.flush()
        s.add(AdapterVersion(repository_id=repo.id, version=1, commit_sha="c" * 40, hypernet_version="t",
                             context_digest="d" * 64, artifact_sha256="a" * 64,
                             artifact_path=str(state.settings.artifact_dir / "none"), status="ready", metrics={},
                             is_active=True))
        s.commit()
    return c


def _is_4xx(resp) -> None:
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])


@pytest.mark.parametrize("path,headers", [
    ("/webhooks/github", {"X-GitHub-Event": "push"}), ("/webhooks/github", {"X-GitHub-Event": "ping"}),
    ("/webhooks/gitlab", {"X-Gitlab-Event": "Push Hook"}), ("/repos", {}), ("/v1/completions", {}),
])
@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
def test_deeply_nested_json_is_400(client, path: str, headers: dict, body: bytes) -> None:
    resp = client.post(path, content=body, headers={**JSON, **headers})
    assert resp.status_code == 400, (resp.status_code, resp.text[:300])


@pytest.mark.parametrize("method,path", [
    ("GET", f"/repos/{HUGE}"), ("DELETE", f"/repos/{HUGE}"), ("GET", f"/repos/{HUGE}/versions"),
    ("GET", "/repos/2147483648"), ("GET", "/repos/9223372036854775808"), ("GET", "/repos/0"),
    ("POST", f"/repos/good/versions/{HUGE}/pin"), ("DELETE", f"/repos/good/versions/{HUGE}"),
    ("POST", "/repos/good/versions/9223372036854775808/pin"), ("GET", f"/jobs/{HUGE}"),
    ("GET", "/repos/%ED%A0%80"), ("GET", "/v1/models/%ED%A0%80"),
])
def test_huge_integers_and_bad_bytes_in_paths_are_4xx(client, method: str, path: str) -> None:
    _is_4xx(client.request(method, path))


def test_huge_integers_in_bodies_are_4xx(client) -> None:
    _is_4xx(client.post("/repos/good/rollback", json={"version": int(HUGE)}))
    _is_4xx(client.post("/repos/good/rollback", json={"version": 2**63}))
    assert client.post("/repos/good/versions/prune", json={"keep": int(HUGE)}).status_code == 200  # keeps all


@pytest.mark.parametrize("model", [f"good@v{HUGE}", "good@v2147483648", "good@v9223372036854775808",
                                   f"{HUGE}", f"{HUGE}@v1", "good@v0"])
def test_huge_version_in_model_name_is_404(client, model: str) -> None:
    for path, extra in (("/v1/completions", {"prompt": "x"}),
                        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})):
        resp = client.post(path, json={"model": model, "max_tokens": 1, **extra})
        assert resp.status_code == 404, (model, resp.status_code, resp.text[:300])
        assert resp.json()["error"]["param"] == "model"


LONE = "\\ud800"  # a JSON escape of a lone surrogate: valid JSON, not valid Unicode


@pytest.mark.parametrize("raw", [
    '{"url": "https://git.example.com/o/r%s.git"}' % LONE, '{"url": "/tmp/x%s"}' % LONE,
    '{"url": "https://git.example.com/o/r.git", "name": "r%s"}' % LONE,
    '{"url": "https://git.example.com/o/r.git", "branch": "m%s"}' % LONE,
])
def test_lone_surrogates_in_a_repos_body_are_422(client, raw: str) -> None:
    resp = client.post("/repos", content=raw.encode(), headers=JSON)
    assert resp.status_code == 422, (resp.status_code, resp.text[:300])
    assert client.get("/repos").json() and len(client.get("/repos").json()) == 1  # nothing new stored


@pytest.mark.parametrize("raw", [
    '{"model": "%s", "prompt": "x"}' % LONE, '{"model": "good%s@v1", "prompt": "x"}' % LONE,
    '{"model": "base", "prompt": "x%s"}' % LONE, '{"model": "base", "prompt": ["ok", "%s"]}' % LONE,
    '{"model": "base", "prompt": "x", "stop": ["%s"]}' % LONE, '{"model": "base", "prompt": "x", "user": "%s"}' % LONE,
])
def test_lone_surrogates_in_completions_are_400(client, raw: str) -> None:
    resp = client.post("/v1/completions", content=raw.encode(), headers=JSON)
    assert resp.status_code == 400, (resp.status_code, resp.text[:300])
    assert resp.json()["error"]["type"] == "invalid_request_error"


def test_lone_surrogates_in_chat_are_400(client) -> None:
    for raw in ('{"model": "base", "messages": [{"role": "user", "content": "%s"}]}' % LONE,
                '{"model": "base", "messages": [{"role": "user", "content": [{"type": "text", "text": "%s"}]}]}'
                % LONE):
        resp = client.post("/v1/chat/completions", content=raw.encode(), headers=JSON)
        assert resp.status_code == 400, (resp.status_code, resp.text[:300])
    ok = client.post("/v1/completions", json={"model": "base", "prompt": "é ✓ 😀", "max_tokens": 2})
    assert ok.status_code == 200, ok.text  # real non-ASCII text is fine
    assert json.loads(ok.text)["choices"]


@pytest.mark.parametrize("raw", ["NaN", '{"keep": NaN}', '{"a": Infinity}', '{"keep": -Infinity}'])
@pytest.mark.parametrize("path", ["/repos", "/repos/good/versions/prune", "/v1/completions"])
def test_nan_and_infinity_in_a_body_are_4xx_with_a_json_answer(client, path: str, raw: str) -> None:
    # Python's json reads NaN / Infinity; the validation error used to echo them and fail to encode (a 500)
    resp = client.post(path, content=raw.encode(), headers=JSON)
    _is_4xx(resp)
    assert resp.json()  # the answer itself is valid JSON
