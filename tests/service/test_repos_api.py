"""REST API of the repository registry: registration, cloning jobs, bad input, deletion."""

from __future__ import annotations

from pathlib import Path

import git
import pytest

from tests.conftest import wait_job


def test_healthz_and_docs(client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["database"]["ok"] is True
    assert body["redis"]["ok"] is True
    assert client.get("/docs").status_code == 200
    assert "/repos" in client.get("/openapi.json").json()["paths"]


def test_register_local_repo_clones_at_head(client, sample_repo: Path) -> None:
    head = git.Repo(sample_repo).head.commit.hexsha
    resp = client.post("/repos", json={"url": str(sample_repo)})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    repo_id, job_id = body["repository"]["id"], body["job"]["id"]
    assert body["repository"]["name"] == "sample"
    assert body["repository"]["status"] == "queued"
    assert len(body["webhook_secret"]) >= 32
    wait_job(client, job_id)
    repo = client.get(f"/repos/{repo_id}").json()
    assert repo["last_commit"] == head
    assert repo["latest_job"]["id"] == job_id
    # by name too
    assert client.get("/repos/sample").json()["id"] == repo_id
    assert [r["id"] for r in client.get("/repos").json()] == [repo_id]


def test_register_specific_branch(client, sample_repo: Path) -> None:
    repo = git.Repo(sample_repo)
    repo.git.checkout("-b", "feature")
    (sample_repo / "extra.py").write_text("X = 1\n")
    repo.git.add(A=True)
    feature_sha = repo.index.commit("feature work").hexsha
    repo.git.checkout("main")
    resp = client.post("/repos", json={"url": sample_repo.as_uri(), "branch": "feature", "name": "feat"})
    assert resp.status_code == 202, resp.text
    wait_job(client, resp.json()["job"]["id"])
    body = client.get("/repos/feat").json()
    assert body["last_commit"] == feature_sha
    assert body["branch"] == "feature"


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "ext::sh -c touch% /tmp/pwned",
        "fd::17",
        "--upload-pack=touch /tmp/pwned",
        "http://example.com/repo.git",
        "git://example.com/repo.git",
        "ftp://example.com/repo.git",
        "https://",
        "https://user:pass@example.com/r.git",
        "",
    ],
)
def test_bad_urls_are_422_and_store_nothing(client, url: str) -> None:
    resp = client.post("/repos", json={"url": url})
    assert resp.status_code == 422, resp.text
    assert client.get("/repos").json() == []


def test_local_paths_refused_unless_allowed(client_for, sample_repo: Path) -> None:
    client = client_for(allow_local_repos=False)
    for url in (str(sample_repo), sample_repo.as_uri()):
        resp = client.post("/repos", json={"url": url})
        assert resp.status_code == 422
        assert "CODE2LORA_ALLOW_LOCAL_REPOS" in resp.json()["detail"]


def test_duplicate_is_409(client, sample_repo: Path) -> None:
    first = client.post("/repos", json={"url": str(sample_repo)})
    assert first.status_code == 202
    dup = client.post("/repos", json={"url": sample_repo.as_uri()})
    assert dup.status_code == 409
    same_name = client.post("/repos", json={"url": str(sample_repo), "branch": "other", "name": "sample"})
    assert same_name.status_code == 409
    wait_job(client, first.json()["job"]["id"])
    assert len(client.get("/repos").json()) == 1


def test_failed_clone_fails_job_with_readable_error(client, sample_repo: Path, make_settings) -> None:
    resp = client.post("/repos", json={"url": str(sample_repo), "branch": "does-not-exist"})
    assert resp.status_code == 202
    job = wait_job(client, resp.json()["job"]["id"])
    assert job["status"] == "failed"
    assert "git clone failed" in job["error"] and "does-not-exist" in job["error"]
    repo = client.get(f"/repos/{resp.json()['repository']['id']}").json()
    assert repo["status"] == "failed" and repo["last_commit"] is None
    assert client.get(f"/repos/{repo['id']}/versions").json() == []
    # nothing half-written: no checkout, no temp clone dirs, no artifacts
    settings = make_settings()
    ws = Path(settings.workspace_dir) / str(repo["id"])
    assert not ws.exists() or list(ws.iterdir()) == []
    assert list(Path(settings.artifact_dir).iterdir()) == []


def test_missing_branch_fails_job(client, sample_repo: Path) -> None:
    resp = client.post("/repos", json={"url": str(sample_repo), "branch": "nope"})
    job = wait_job(client, resp.json()["job"]["id"])
    assert job["status"] == "failed"
    assert "nope" in job["error"]


def test_clone_timeout_fails_job(client_for, hanging_server: str) -> None:
    from service.netguard import REMOTE_FAILURE

    # a loopback host must be allow-listed (issue 21 Medium 4); a remote failure never says which kind it was
    client = client_for(clone_timeout_s=1.5, allowed_git_hosts=["127.0.0.1"])
    resp = client.post("/repos", json={"url": hanging_server})
    assert resp.status_code == 202
    job = wait_job(client, resp.json()["job"]["id"], timeout=30)
    assert job["status"] == "failed"
    assert job["error"] == REMOTE_FAILURE


def test_repo_over_size_limit_fails(client_for, sample_repo: Path) -> None:
    client = client_for(max_repo_bytes=1000)
    resp = client.post("/repos", json={"url": str(sample_repo)})
    job = wait_job(client, resp.json()["job"]["id"])
    assert job["status"] == "failed"
    assert "limit" in job["error"]


def test_unknown_ids_are_404(client) -> None:
    assert client.get("/repos/999").status_code == 404
    assert client.get("/repos/nope").status_code == 404
    assert client.get("/repos/999/versions").status_code == 404
    assert client.delete("/repos/999").status_code == 404
    assert client.get("/jobs/abc").status_code == 404


def test_delete_removes_repo_and_workspace(client, sample_repo: Path, make_settings) -> None:
    resp = client.post("/repos", json={"url": str(sample_repo)})
    wait_job(client, resp.json()["job"]["id"])
    repo_id = resp.json()["repository"]["id"]
    ws = Path(make_settings().workspace_dir) / str(repo_id)
    assert (ws / "checkout" / "shapes" / "geometry.py").exists()
    assert client.delete(f"/repos/{repo_id}").status_code == 204
    assert client.get(f"/repos/{repo_id}").status_code == 404
    assert not ws.exists()
    # the job history survives, detached from the deleted repository
    assert client.get(f"/jobs/{resp.json()['job']['id']}").json()["repository_id"] is None
