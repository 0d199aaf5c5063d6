"""Helpers shared by the dashboard tests: CSRF tokens, login, seeded repositories."""

from __future__ import annotations

import re
from typing import Any

from service.db.models import AdapterVersion, Job, Repository

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
# Not on loopback: the dashboard needs a login and the REST routes (used to wait for jobs) an API key.
SECURE = dict(host="0.0.0.0", admin_password="admin-pw", readonly_password="viewer-pw", session_secret="s" * 32,
              api_keys=["admin-test-key"], bearer="admin-test-key")


def csrf(client, path: str = "/admin/login") -> str:
    """The CSRF token of the client's session, read from a rendered page."""
    resp = client.get(path, headers={"accept": "text/html"})
    match = CSRF_RE.search(resp.text)
    assert match, f"no CSRF token on {path}: {resp.status_code} {resp.text[:200]}"
    return match.group(1)


def login(client, user: str, password: str):
    """Post the login form; returns the response (303 on success)."""
    token = csrf(client, "/admin/login")
    return client.post("/admin/login", data={"username": user, "password": password, "csrf_token": token},
                       follow_redirects=False)


def post(client, path: str, **data: Any):
    """Post a dashboard form with this session's CSRF token."""
    return client.post(path, data={"csrf_token": csrf(client, "/admin"), **data}, follow_redirects=False)


def seed_repo(client, n_versions: int = 3, metrics: list[dict] | None = None, name: str = "seeded") -> int:
    """A repository with `n_versions` ready versions (the last active), written straight to the DB."""
    state = client.app.state.c2l
    with state.sessions() as s:
        repo = Repository(name=name, url=f"/nonexistent/{name}", branch="", status="ready", mode="static",
                          webhook_secret="old-secret", last_commit="c" * 40, active_version=n_versions)
        s.add(repo)
        s.flush()
        for n in range(1, n_versions + 1):
            s.add(AdapterVersion(
                repository_id=repo.id, version=n, commit_sha=f"{n:040d}", hypernet_version="hn-test",
                context_digest=f"{n:064x}", artifact_sha256=f"{repo.id:032d}{n:032d}",
                artifact_path=str(state.settings.artifact_dir / f"{name}-{n}"), status="ready",
                metrics=(metrics[n - 1] if metrics else {}), is_active=n == n_versions))
        s.commit()
        return repo.id


def repo_row(client, repo_id: int) -> Repository | None:
    """A fresh, detached copy of the repository row with its versions loaded."""
    with client.app.state.c2l.sessions() as s:
        repo = s.get(Repository, repo_id)
        if repo is not None:
            _ = list(repo.versions)
            s.expunge_all()
        return repo


def jobs_of(client, repo_id: int) -> list[Job]:
    """The repository's jobs, oldest first."""
    from sqlalchemy import select

    with client.app.state.c2l.sessions() as s:
        rows = list(s.scalars(select(Job).where(Job.repository_id == repo_id).order_by(Job.created_at)))
        s.expunge_all()
        return rows
