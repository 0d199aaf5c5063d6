"""Push webhooks: signatures, matching, ignored events, deleted branches, redelivery, coalescing."""

from __future__ import annotations

import json
from pathlib import Path

import git
from hypothesis import given
from hypothesis import strategies as st

from service.webhooks import github_signature, verify_github, verify_gitlab
from tests.conftest import wait_job


def test_github_documented_test_vector() -> None:
    sig = github_signature("It's a Secret to Everybody", b"Hello, World!")
    assert sig == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


@given(st.text(min_size=1), st.binary(), st.binary(min_size=1))
def test_signature_accepts_only_exact_body(secret: str, body: bytes, tweak: bytes) -> None:
    sig = github_signature(secret, body)
    assert verify_github(secret, body, sig)
    assert not verify_github(secret, body + tweak, sig)
    assert not verify_github(secret + "x", body, sig)
    assert not verify_github(secret, body, None) and not verify_github(None, body, sig)


def test_gitlab_token() -> None:
    assert verify_gitlab("s3cret", "s3cret")
    assert not verify_gitlab("s3cret", "s3cret ") and not verify_gitlab("s3cret", None)


def _github_push(repo_url: str, after: str, before: str, ref: str = "refs/heads/main", **extra) -> bytes:
    payload = {"ref": ref, "before": before, "after": after, "created": False, "deleted": False, "forced": False,
               "repository": {"clone_url": repo_url, "html_url": repo_url, "full_name": "t/sample",
                              "default_branch": "main"}, **extra}
    return json.dumps(payload).encode()


def _send(client, body: bytes, secret: str | None, event: str = "push", delivery: str = "d1"):
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "content-type": "application/json"}
    if secret is not None:
        headers["X-Hub-Signature-256"] = github_signature(secret, body)
    return client.post("/webhooks/github", content=body, headers=headers)


def _commit(path: Path, rel: str, text: str) -> str:
    repo = git.Repo(path)
    (path / rel).write_text(text)
    repo.git.add(A=True)
    return repo.index.commit(f"edit {rel}").hexsha


def test_github_push_builds_new_version_incrementally(client, sample_repo: Path) -> None:
    created = client.post("/repos", json={"url": str(sample_repo)}).json()
    repo_id, secret, url = created["repository"]["id"], created["webhook_secret"], created["repository"]["url"]
    assert wait_job(client, created["job"]["id"])["status"] == "succeeded"
    old = git.Repo(sample_repo).head.commit.hexsha
    new = _commit(sample_repo, "shapes/geometry.py",
                  (sample_repo / "shapes/geometry.py").read_text() + "\n\ndef perimeter(w: float, h: float) -> float:\n"
                  "    return 2 * (w + h)\n")
    body = _github_push(url, new, old)

    assert _send(client, body, None).status_code == 401
    assert _send(client, body, "wrong-secret").status_code == 401
    resp = _send(client, body, secret)
    assert resp.status_code == 202, resp.text
    assert resp.json()["repositories"] == [repo_id]
    job = wait_job(client, resp.json()["jobs"][0])
    assert job["status"] == "succeeded" and job["kind"] == "regenerate"
    repo = client.get(f"/repos/{repo_id}").json()
    assert repo["last_commit"] == new and repo["active_version"] == 2
    versions = client.get(f"/repos/{repo_id}/versions").json()
    assert [v["commit_sha"] for v in versions] == [old, new]
    # redelivery of the same delivery id does not queue again
    again = _send(client, body, secret)
    assert again.status_code == 202 and again.json()["outcome"].startswith("duplicate delivery")
    assert again.json()["jobs"] == resp.json()["jobs"]


def test_github_ping_other_events_and_branches(client, sample_repo: Path) -> None:
    created = client.post("/repos", json={"url": str(sample_repo)}).json()
    secret, url = created["webhook_secret"], created["repository"]["url"]
    wait_job(client, created["job"]["id"])
    ping = json.dumps({"zen": "hi", "repository": {"clone_url": url}}).encode()
    assert _send(client, ping, secret, event="ping", delivery="p").status_code == 200
    issue = _send(client, b'{"action": "opened"}', secret, event="issues", delivery="i")
    assert issue.status_code == 202 and issue.json()["outcome"].startswith("ignored")
    other = _send(client, _github_push(url, "a" * 40, "b" * 40, ref="refs/heads/dev"), secret, delivery="o")
    assert other.status_code == 202 and "no registered repository tracks branch" in other.json()["outcome"]
    unknown = _send(client, _github_push("https://example.com/x/y.git", "a" * 40, "b" * 40), secret, delivery="u")
    assert unknown.status_code == 401  # the same answer as a wrong signature: registered URLs cannot be probed
    bad = client.post("/webhooks/github", content=b"{nope", headers={"X-GitHub-Event": "push"})
    assert bad.status_code == 400


def test_deleted_branch_keeps_adapter(client, sample_repo: Path) -> None:
    created = client.post("/repos", json={"url": str(sample_repo)}).json()
    wait_job(client, created["job"]["id"])
    body = _github_push(created["repository"]["url"], "0" * 40, "b" * 40, deleted=True)
    resp = _send(client, body, created["webhook_secret"], delivery="del")
    assert resp.status_code == 202 and resp.json()["jobs"] == []
    repo = client.get(f"/repos/{created['repository']['id']}").json()
    assert repo["active_version"] == 1 and "deleted" in repo["status_message"]


def test_secret_rotation(client, sample_repo: Path) -> None:
    created = client.post("/repos", json={"url": str(sample_repo)}).json()
    wait_job(client, created["job"]["id"])
    new_secret = client.post(f"/repos/{created['repository']['id']}/webhook-secret").json()["webhook_secret"]
    assert new_secret != created["webhook_secret"]
    body = _github_push(created["repository"]["url"], "0" * 40, "b" * 40, deleted=True)
    assert _send(client, body, created["webhook_secret"], delivery="r1").status_code == 401
    assert _send(client, body, new_secret, delivery="r2").status_code == 202


def test_gitlab_push(client, sample_repo: Path) -> None:
    created = client.post("/repos", json={"url": str(sample_repo)}).json()
    wait_job(client, created["job"]["id"])
    new = _commit(sample_repo, "shapes/extra.py", "LIMIT = 3\n")
    payload = {"object_kind": "push", "ref": "refs/heads/main", "before": "b" * 40, "after": new,
               "project": {"git_http_url": created["repository"]["url"], "default_branch": "main"}}
    headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": created["webhook_secret"],
               "X-Gitlab-Event-UUID": "gl-1"}
    resp = client.post("/webhooks/gitlab", json=payload, headers=headers)
    assert resp.status_code == 202, resp.text
    assert wait_job(client, resp.json()["jobs"][0])["status"] == "succeeded"
    assert client.get(f"/repos/{created['repository']['id']}").json()["last_commit"] == new
    assert client.post("/webhooks/gitlab", json=payload, headers={**headers, "X-Gitlab-Token": "x"}).status_code == 401


class _RecordingQueue:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def enqueue(self, job_id: str) -> None:
        self.ids.append(job_id)

    def depth(self) -> int:
        return len(self.ids)

    def shutdown(self) -> None:
        pass


def test_pushes_coalesce_into_the_queued_job(make_settings) -> None:
    from service.bootstrap import build_state
    from service.db.models import Job, Repository
    from service.webhooks import PushEvent, schedule_push

    state = build_state(make_settings(), start_queue=False)
    state.queue = _RecordingQueue()
    try:
        with state.sessions() as s:
            repo = Repository(name="r", url="https://example.com/r.git", branch="", webhook_secret="x")
            s.add(repo)
            s.commit()
            ev = lambda after: PushEvent(urls=[], branch="main", default_branch="main", before=None,
                                         after=after, deleted=False, forced=False)
            first, out1 = schedule_push(state, s, repo, ev("1" * 40))
            second, out2 = schedule_push(state, s, repo, ev("2" * 40))
            assert out1 == "regenerate job queued" and out2 == "coalesced into queued job"
            assert first.id == second.id and state.queue.ids == [first.id]
            assert s.get(Job, first.id).params["after"] == "2" * 40
            # once the job runs, the next push queues a new one (it waits for the repository lock)
            s.get(Job, first.id).status = "running"
            s.commit()
            third, out3 = schedule_push(state, s, repo, ev("3" * 40))
            assert third.id != first.id and state.queue.ids == [first.id, third.id]
    finally:
        state.close()


def test_repo_lock_excludes_and_expires(make_settings) -> None:
    import time

    from service import locks
    from service.bootstrap import build_state

    state = build_state(make_settings(), start_queue=False)
    try:
        assert locks.try_acquire(state.sessions, 1, "a", ttl_s=0.5)
        assert not locks.try_acquire(state.sessions, 1, "b", ttl_s=0.5)
        assert locks.try_acquire(state.sessions, 1, "a", ttl_s=0.5)  # renewal by the holder
        time.sleep(0.6)  # holder crashed: the lock expires
        assert locks.try_acquire(state.sessions, 1, "b", ttl_s=5)
        locks.release(state.sessions, 1, "a")  # not the holder: no effect
        assert not locks.try_acquire(state.sessions, 1, "c", ttl_s=5)
        locks.release(state.sessions, 1, "b")
        assert locks.try_acquire(state.sessions, 1, "c", ttl_s=5)
    finally:
        state.close()


def test_push_with_rename_and_delete_then_out_of_order_delivery(client, sample_repo: Path, make_settings) -> None:
    created = client.post("/repos", json={"url": str(sample_repo)}).json()
    repo_id, secret, url = created["repository"]["id"], created["webhook_secret"], created["repository"]["url"]
    assert wait_job(client, created["job"]["id"])["status"] == "succeeded"
    repo = git.Repo(sample_repo)
    old = repo.head.commit.hexsha
    repo.git.mv("shapes/geometry.py", "shapes/shapes_geometry.py")
    (sample_repo / "shapes/__init__.py").write_text("from .shapes_geometry import area_of_circle, Rectangle\n")
    repo.git.rm("tests/test_geometry.py")
    repo.git.add(A=True)
    new = repo.index.commit("rename geometry, drop its test").hexsha
    resp = _send(client, _github_push(url, new, old), secret, delivery="rn1")
    assert wait_job(client, resp.json()["jobs"][0])["status"] == "succeeded"
    versions = client.get(f"/repos/{repo_id}/versions").json()
    assert [v["commit_sha"] for v in versions] == [old, new]
    saved = json.loads((Path(make_settings().workspace_dir) / str(repo_id) / "context.json").read_text())
    files = set(saved["context"]["files"])
    assert "shapes/shapes_geometry.py" in files
    assert "shapes/geometry.py" not in files and "tests/test_geometry.py" not in files
    # an older push delivered late (new delivery id): the job fetches the head, nothing changes, no new version
    late = _send(client, _github_push(url, old, "0" * 39 + "1"), secret, delivery="late-1")
    assert wait_job(client, late.json()["jobs"][0])["status"] == "succeeded"
    assert [v["version"] for v in client.get(f"/repos/{repo_id}/versions").json()] == [1, 2]
    assert client.get(f"/repos/{repo_id}").json()["last_commit"] == new
