"""Repository registry operations, shared by the REST API, the dashboard and the CLI."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db.models import AdapterVersion, Job, Repository
from service.jobs.queue import enqueue_or_withdraw
from service.names import engine_names
from service.netguard import check_remote_host
from service.repourl import (
    NormalizedURL,
    RepoURLError,
    check_branch,
    check_repo_name,
    normalize_repo_url,
    repo_name_from_url,
)
from service.state import ServiceState


class Conflict(Exception):
    """The request clashes with existing state (HTTP 409)."""


class NotFound(Exception):
    """No such object (HTTP 404)."""


def find_repo(session: Session, ref: str | int) -> Repository | None:
    """A repository by numeric id or by name."""
    if isinstance(ref, str) and any("\ud800" <= c <= "\udfff" for c in ref):
        return None  # a lone surrogate names nothing (and cannot be encoded for the DB)
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit() and len(ref) <= 10):
        if 0 < int(ref) <= 2**31 - 1:  # ids are 32-bit: a larger number names no repository (not a DB error)
            repo = session.get(Repository, int(ref))
            if repo is not None:
                return repo
    return session.scalar(select(Repository).where(Repository.name == str(ref)))


def check_local_repo(url: NormalizedURL) -> None:
    """A file URL must name an existing git repository (a work tree with `.git`, or a bare one); raise
    RepoURLError (422). Only files are looked at: git is never run inside a folder the client chose."""
    if url.kind != "file":
        return
    path = Path(unquote(urlparse(url.url).path))
    if not path.exists():
        raise RepoURLError(f"local path {path} does not exist")
    if not path.is_dir():
        raise RepoURLError(f"local path {path} is not a directory")
    if not ((path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir())):
        raise RepoURLError(f"local path {path} is not a git repository (no .git, and not a bare repository)")


def latest_job(session: Session, repo_id: int) -> Job | None:
    """The most recent job of a repository."""
    return session.scalar(
        select(Job).where(Job.repository_id == repo_id).order_by(Job.created_at.desc(), Job.id.desc()).limit(1)
    )


def _unique_name(session: Session, base: str) -> str:
    name, n = base, 1
    while session.scalar(select(func.count()).select_from(Repository).where(Repository.name == name)):
        n += 1
        name = f"{base}-{n}"
    return name


def register_repo(
    state: ServiceState, session: Session, url: str, branch: str | None, name: str | None, mode: str
) -> tuple[Repository, Job, str]:
    """Create the repository and its ingest job, enqueue it; raises RepoURLError or Conflict."""
    check_repo_name(name)  # the same rules for REST, the dashboard and the CLI
    check_branch(branch)
    normalized = normalize_repo_url(url, allow_local=state.settings.allow_local_repos)
    # Not an address inside this network unless allowed (issue 21 Medium 4); the clone checks again.
    check_remote_host(normalized, state.settings.allowed_git_hosts)
    stored_url = normalized.url
    existing = session.scalar(select(Repository).where(Repository.url == stored_url,
                                                       Repository.branch == (branch or "")))
    if existing is not None and not _never_ingested(session, existing):
        raise Conflict(f"repository {stored_url} (branch {branch or 'default'}) is already registered as "
                       f"{existing.name!r} (id {existing.id}, status {existing.status}); "
                       f"POST /repos/{existing.id}/regenerate rebuilds it, DELETE /repos/{existing.id} removes it")
    if name is not None and session.scalar(select(Repository).where(Repository.name == name,
                                                                    Repository.id != (existing.id if existing else -1))):
        raise Conflict(f"a repository named {name!r} already exists")
    check_local_repo(normalized)  # after the lookups: a database outage answers 503 first
    if existing is not None:
        return _register_again(state, session, existing, name, mode)
    secret = secrets.token_hex(24)
    repo = Repository(
        name=name or _unique_name(session, repo_name_from_url(stored_url)),
        url=stored_url,
        branch=branch or "",
        mode=mode,
        status="queued",
        webhook_secret=secret,
    )
    session.add(repo)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent registration won the race
        session.rollback()
        raise Conflict("repository already registered") from exc
    job = Job(kind="ingest", repository_id=repo.id, status="queued", message="waiting for a worker")
    session.add(job)
    session.commit()
    enqueue_or_withdraw(state, session, job, repo)
    return repo, job, secret


def _never_ingested(session: Session, repo: Repository) -> bool:
    """A registration whose ingest failed and that has no adapter version: registering it again retries it."""
    if repo.active_version is not None or session.scalar(
            select(func.count()).select_from(AdapterVersion).where(AdapterVersion.repository_id == repo.id)):
        return False
    job = latest_job(session, repo.id)
    return job is not None and job.status == "failed"


def _register_again(state: ServiceState, session: Session, repo: Repository, name: str | None,
                    mode: str) -> tuple[Repository, Job, str]:
    """Retry a failed registration on the same row: the request's name and mode, a new secret, a new ingest job."""
    if name is not None:
        repo.name = name
    repo.mode = mode
    repo.status = "queued"
    repo.status_message = None
    repo.webhook_secret = secret = secrets.token_hex(24)
    job = Job(kind="ingest", repository_id=repo.id, status="queued", message="waiting for a worker (registered again)")
    session.add(job)
    session.commit()
    enqueue_or_withdraw(state, session, job)
    return repo, job, secret


def enqueue_job(state: ServiceState, session: Session, repo: Repository, kind: str, **params: object) -> Job:
    """Queue a job for `repo` and commit."""
    job = Job(kind=kind, repository_id=repo.id, status="queued", message="waiting for a worker", params=dict(params))
    session.add(job)
    session.commit()
    enqueue_or_withdraw(state, session, job)
    return job


def pending_refine(session: Session, repo_id: int) -> Job | None:
    """A refine job of the repository that is queued or running."""
    return session.scalar(select(Job).where(Job.repository_id == repo_id, Job.kind == "refine",
                                            Job.status.in_(("queued", "running"))).limit(1))


def request_refine(state: ServiceState, session: Session, repo: Repository, **params: object) -> Job:
    """Queue a refine job for the active adapter; Conflict when there is none yet or a refinement is pending."""
    if repo.active_version is None:
        raise Conflict(f"repository {repo.name!r} has no active adapter to refine yet")
    pending = pending_refine(session, repo.id)
    if pending is not None:
        raise Conflict(f"a refine job for {repo.name!r} is already {pending.status} (job {pending.id})")
    return enqueue_job(state, session, repo, "refine", **{k: v for k, v in params.items() if v is not None})


def delete_repo(state: ServiceState, session: Session, repo: Repository) -> None:
    """Delete a repository, its versions, its workspace, and artifacts no other version uses."""
    shas = {v.artifact_sha256: v.artifact_path for v in repo.versions}
    names = engine_names(repo, repo.versions)
    repo_id = repo.id
    session.delete(repo)
    session.commit()
    state.retire(names)  # engines unload them: their folders may go next
    for sha, path in shas.items():
        # Artifacts are content-addressed: another repository may share the same bytes.
        still_used = session.scalar(select(func.count()).select_from(AdapterVersion).where(
            AdapterVersion.artifact_sha256 == sha))
        if not still_used:
            state.cache.delete(sha)
            shutil.rmtree(path, ignore_errors=True)
    state.cache.set_active(repo_id, None)
    shutil.rmtree(Path(state.settings.workspace_dir) / str(repo_id), ignore_errors=True)


def retry_job(state: ServiceState, session: Session, job: Job) -> Job:
    """Queue a new job of a failed job's kind and parameters for the same repository; raises Conflict."""
    if job.status != "failed":
        raise Conflict(f"job {job.id} is {job.status}; only failed jobs can be retried")
    repo = session.get(Repository, job.repository_id) if job.repository_id is not None else None
    if repo is None:
        raise Conflict(f"job {job.id} has no repository any more")
    return enqueue_job(state, session, repo, job.kind, **(job.params or {}))
