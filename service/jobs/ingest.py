"""The ingest/regenerate job: clone or fetch -> extract context -> generate and store the adapter."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from service.db.models import Job, Repository
from service.gitops import CloneError, RepoURLError, clone, normalize_repo_url
from service.jobs.runner import JobError, Reporter

if TYPE_CHECKING:
    from service.state import ServiceState


def checkout_dir(state: "ServiceState", repo_id: int) -> Path:
    """Where a repository's working tree lives."""
    return Path(state.settings.workspace_dir) / str(repo_id) / "checkout"


def _set_repo(state: "ServiceState", repo_id: int, **fields: object) -> Repository:
    with state.sessions.begin() as s:
        repo = s.get(Repository, repo_id)
        if repo is None:
            raise JobError("repository was deleted while the job ran")
        for k, v in fields.items():
            setattr(repo, k, v)
        s.flush()
        s.expunge(repo)
        return repo


def run_ingest(state: "ServiceState", job: Job, report: Reporter) -> str:
    """Clone the repository at its branch head, then build its adapter version."""
    if job.repository_id is None:
        raise JobError("job has no repository")
    repo = _set_repo(state, job.repository_id, status="cloning", status_message=None)
    settings = state.settings
    report(0.05, f"cloning {repo.url}")
    try:
        url = normalize_repo_url(repo.url, allow_local=settings.allow_local_repos)
        sha = clone(url, checkout_dir(state, repo.id), branch=repo.branch or None,
                    timeout_s=settings.clone_timeout_s, max_bytes=settings.max_repo_bytes)
    except (CloneError, RepoURLError) as exc:
        raise JobError(str(exc)) from exc
    _set_repo(state, repo.id, last_commit=sha, status="extracting")
    report(0.3, f"cloned at {sha[:12]}")

    from service.adapters import build_adapter_version

    version = build_adapter_version(state, repo.id, checkout_dir(state, repo.id), sha, report)
    return f"adapter version {version.version} ready (commit {sha[:12]})"
