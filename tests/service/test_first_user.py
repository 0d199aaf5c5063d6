"""What a new user meets first (issue 22): OpenAI-shaped errors read by the official client, OpenAI's model fields,
registering a failed repository again, local paths checked at registration, clone errors without internal paths,
the dashboard's icon."""

from __future__ import annotations

from pathlib import Path

import git
import openai
import pytest

from tests.conftest import SAMPLE_FILES, make_git_repo, wait_job


@pytest.fixture
def backend() -> str:  # request and registration logic only: the embedded defaults are enough
    return "sqlite"


@pytest.fixture
def served(client_for, service_checkpoint: Path):
    client = client_for(engine="local", hypernet_checkpoint=service_checkpoint)
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0)
    return client, oai


def _as_openai_error(oai: openai.OpenAI, response) -> openai.APIStatusError:
    """The exception the official client raises for this HTTP response (its own status/body mapping)."""
    import httpx

    raw = httpx.Response(response.status_code, headers=response.headers, content=response.content,
                         request=httpx.Request("POST", "http://testserver/v1/completions"))
    return oai._make_status_error_from_response(raw)


def test_malformed_json_is_a_400_that_says_what_is_wrong(served) -> None:
    client, oai = served
    resp = client.post("/v1/completions", content=b'{"model": "base", "prompt": }',
                       headers={"content-type": "application/json"})
    err = _as_openai_error(oai, resp)
    assert isinstance(err, openai.BadRequestError)
    body = err.body
    assert body["type"] == "invalid_request_error" and body["param"] is None
    assert "not parse the JSON body" in body["message"] and "Expecting value" in body["message"]
    empty = _as_openai_error(oai, client.post("/v1/chat/completions", content=b"",
                                              headers={"content-type": "application/json"}))
    assert isinstance(empty, openai.BadRequestError) and empty.body["param"] is None
    assert "empty" in empty.body["message"]
    # a wrong field still names its parameter
    with pytest.raises(openai.BadRequestError) as wrong:
        oai.completions.create(model="base", prompt="x", max_tokens=2, extra_body={"n": "many"})
    assert wrong.value.body["param"] == "n"


def test_unknown_model_is_model_not_found(served) -> None:
    _, oai = served
    with pytest.raises(openai.NotFoundError) as unknown:
        oai.completions.create(model="no-such-repo", prompt="x", max_tokens=2)
    body = unknown.value.body
    assert body["type"] == "invalid_request_error" and body["code"] == "model_not_found"
    assert "no-such-repo" in body["message"]
    with pytest.raises(openai.NotFoundError) as chat:
        oai.chat.completions.create(model="no-such-repo@v3", messages=[{"role": "user", "content": "x"}])
    assert chat.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as retrieve:
        oai.models.retrieve("no-such-repo")
    assert retrieve.value.body["code"] == "model_not_found" and retrieve.value.body["param"] is None


def test_models_carry_openai_fields_only(client_for, sample_repo: Path, service_checkpoint: Path) -> None:
    client = client_for(hypernet_checkpoint=service_checkpoint)  # a checkpoint that fits: adapters on
    created = client.post("/repos", json={"url": str(sample_repo), "name": "sample"})
    assert wait_job(client, created.json()["job"]["id"])["status"] == "succeeded"
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0)
    raw = client.get("/v1/models").json()
    assert raw["object"] == "list" and [m["id"] for m in raw["data"]] == ["base", "sample", "sample@v1"]
    for card in raw["data"]:
        assert set(card) == {"id", "object", "created", "owned_by"}, card
        assert card["object"] == "model" and isinstance(card["created"], int)
    assert str(client.app.state.c2l.settings.data_dir) not in client.get("/v1/models").text
    one = oai.models.retrieve("sample@v1")
    assert one.id == "sample@v1" and one.owned_by == "code2lora"
    assert set(client.get("/v1/models/sample@v1").json()) == {"id", "object", "created", "owned_by"}


def test_a_failed_registration_is_retried_by_registering_again(client_for, tmp_path: Path,
                                                                make_settings) -> None:
    client = client_for()
    path = tmp_path / "late"
    make_git_repo(path, SAMPLE_FILES)
    first = client.post("/repos", json={"url": str(path), "branch": "feature"})  # no such branch yet
    assert first.status_code == 202
    failed = wait_job(client, first.json()["job"]["id"])
    assert failed["status"] == "failed" and "feature" in failed["error"]
    # clone errors name the user's repository and git's message, never the service's own folders
    settings = make_settings()
    assert ".tmp-" not in failed["error"] and str(settings.data_dir) not in failed["error"]

    git.Repo(path).git.branch("feature")
    again = client.post("/repos", json={"url": path.as_uri(), "branch": "feature", "mode": "evolving"})
    assert again.status_code == 202, again.text
    body = again.json()
    assert body["repository"]["id"] == first.json()["repository"]["id"]  # the same row
    assert body["job"]["id"] != failed["id"] and body["repository"]["mode"] == "evolving"
    assert body["webhook_secret"] != first.json()["webhook_secret"]  # a new one, shown once
    assert wait_job(client, body["job"]["id"])["status"] == "succeeded"
    assert len(client.get("/repos").json()) == 1
    assert client.get(f"/repos/{body['repository']['id']}").json()["active_version"] == 1

    # once it has an adapter, registering again is a conflict that says how to rebuild it
    dup = client.post("/repos", json={"url": str(path), "branch": "feature"})
    assert dup.status_code == 409
    assert f"/repos/{body['repository']['id']}/regenerate" in dup.json()["detail"]


def test_a_retry_is_refused_while_its_job_is_pending(client_for, tmp_path: Path) -> None:
    from service.db.models import Job

    client = client_for()
    path = tmp_path / "r"
    make_git_repo(path, SAMPLE_FILES)
    first = client.post("/repos", json={"url": str(path), "branch": "nope"})
    wait_job(client, first.json()["job"]["id"])
    state = client.app.state.c2l
    with state.sessions.begin() as s:  # a retry is already queued (a worker has not picked it up yet)
        s.add(Job(kind="ingest", repository_id=first.json()["repository"]["id"], status="queued", message="x"))
    assert client.post("/repos", json={"url": str(path), "branch": "nope"}).status_code == 409


def test_bad_local_paths_are_refused_at_registration(client_for, tmp_path: Path) -> None:
    client = client_for()
    (tmp_path / "plain").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for url, words in ((str(tmp_path / "missing"), "does not exist"),
                       ((tmp_path / "missing").as_uri(), "does not exist"),
                       (str(tmp_path / "plain"), "not a git repository"),
                       (str(tmp_path / "file.txt"), "not a directory")):
        resp = client.post("/repos", json={"url": url})
        assert resp.status_code == 422, (url, resp.text)
        assert words in resp.json()["detail"]
    assert client.get("/repos").json() == []
    bare = tmp_path / "bare.git"
    git.Repo.init(bare, bare=True)
    assert client.post("/repos", json={"url": str(bare)}).status_code == 202  # a bare repository is a repository


def test_repos_answer_malformed_json_in_the_rest_shape(client_for) -> None:
    client = client_for()
    resp = client.post("/repos", content=b'{"url": ', headers={"content-type": "application/json"})
    assert resp.status_code == 422
    (error,) = resp.json()["detail"]
    assert error["type"] == "json_invalid" and error["loc"] == ["body"]
    assert "not parse the JSON body" in error["msg"]


def test_favicon(client_for) -> None:
    client = client_for()
    resp = client.get("/favicon.ico")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/x-icon"
    assert resp.content[:4] == b"\x00\x00\x01\x00"  # an ICO header
    page = client.get("/admin", headers={"accept": "text/html"})
    assert page.status_code == 200 and 'rel="icon" href="/favicon.ico"' in page.text
