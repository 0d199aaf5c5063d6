"""/repos: register, list, inspect and delete repositories; list their adapter versions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from service import repos as registry
from service import versions
from service.api.auth import require_api_key
from service.api.deps import SessionDep, StateDep
from service.api.limits import register_rate_limit
from service.api.schemas import (
    JobOut,
    PruneIn,
    PruneOut,
    RefineIn,
    RepoCreate,
    RepoCreated,
    RepoOut,
    RepoUpdate,
    RollbackIn,
    SecretOut,
    VersionOut,
)
from service.db.models import Repository
from service.repourl import RepoURLError

# Same rule as /v1: API keys when configured; without keys only direct loopback clients (service.api.auth).
router = APIRouter(prefix="/repos", tags=["repositories"], dependencies=[Depends(require_api_key)])


def _repo_out(session: Session, repo: Repository) -> RepoOut:
    out = RepoOut.model_validate(repo)
    out.branch = repo.branch or None
    job = registry.latest_job(session, repo.id)
    out.latest_job = JobOut.model_validate(job) if job else None
    return out


def _get_or_404(session: Session, ref: str) -> Repository:
    repo = registry.find_repo(session, ref)
    if repo is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"repository {ref!r} not found")
    return repo


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=RepoCreated,
             dependencies=[Depends(register_rate_limit)],
             responses={409: {"description": "Already registered"},
                        422: {"description": "Invalid URL (or a host inside this network, not allow-listed)"},
                        429: {"description": "Too many registrations from this client",
                              "headers": {"Retry-After": {"schema": {"type": "integer"}}}}})
def create_repo(body: RepoCreate, state: StateDep, session: SessionDep) -> RepoCreated:
    """Register a repository and queue its ingest job (clone, extract, generate the adapter)."""
    try:
        repo, job, secret = registry.register_repo(state, session, body.url, body.branch, body.name, body.mode)
    except RepoURLError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except registry.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return RepoCreated(repository=_repo_out(session, repo), job=JobOut.model_validate(job), webhook_secret=secret)


@router.get("", response_model=list[RepoOut])
def list_repos(session: SessionDep) -> list[RepoOut]:
    """All repositories, oldest first."""
    return [_repo_out(session, r) for r in session.scalars(select(Repository).order_by(Repository.id))]


@router.get("/{ref}", response_model=RepoOut, responses={404: {"description": "Unknown repository"}})
def get_repo(ref: str, session: SessionDep) -> RepoOut:
    """One repository by id or name, with its latest job."""
    return _repo_out(session, _get_or_404(session, ref))


@router.patch("/{ref}", response_model=RepoOut, responses={404: {"description": "Unknown repository"}})
def update_repo(ref: str, body: RepoUpdate, session: SessionDep) -> RepoOut:
    """Change the adaptation mode (`static` or `evolving`); it applies from the next push or regeneration."""
    repo = _get_or_404(session, ref)
    if body.mode is not None:
        repo.mode = body.mode
    session.commit()
    return _repo_out(session, repo)


@router.delete("/{ref}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"description": "Unknown repository"}})
def delete_repo(ref: str, state: StateDep, session: SessionDep) -> None:
    """Delete a repository with its adapter versions and artifacts."""
    registry.delete_repo(state, session, _get_or_404(session, ref))


@router.get("/{ref}/versions", response_model=list[VersionOut], responses={404: {"description": "Unknown repository"}})
def list_versions(ref: str, session: SessionDep) -> list[VersionOut]:
    """The adapter versions of a repository, oldest first."""
    repo = _get_or_404(session, ref)
    return [VersionOut.model_validate(v) for v in repo.versions]


def _call(fn, *args, **kwargs):
    """Map registry errors to HTTP statuses."""
    try:
        return fn(*args, **kwargs)
    except registry.NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except registry.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc


@router.post("/{ref}/versions/{number}/pin", response_model=RepoOut, responses={404: {}, 409: {}})
def pin_version(ref: str, number: int, state: StateDep, session: SessionDep) -> RepoOut:
    """Pin a version: it is served until unpinned, whatever pushes arrive."""
    return _repo_out(session, _call(versions.pin, state, session, _get_or_404(session, ref), number))


@router.post("/{ref}/unpin", response_model=RepoOut, responses={404: {}})
def unpin(ref: str, state: StateDep, session: SessionDep) -> RepoOut:
    """Remove the pin; the newest ready version becomes active."""
    return _repo_out(session, _call(versions.unpin, state, session, _get_or_404(session, ref)))


@router.post("/{ref}/rollback", response_model=RepoOut, responses={404: {}, 409: {}})
def rollback(ref: str, state: StateDep, session: SessionDep, body: RollbackIn | None = None) -> RepoOut:
    """Activate an earlier version (default: the previous one)."""
    number = body.version if body else None
    return _repo_out(session, _call(versions.rollback, state, session, _get_or_404(session, ref), number))


@router.post("/{ref}/regenerate", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED, responses={404: {}})
def regenerate(ref: str, state: StateDep, session: SessionDep) -> JobOut:
    """Fetch the branch head and rebuild the adapter from a full extraction."""
    repo = _get_or_404(session, ref)
    return JobOut.model_validate(registry.enqueue_job(state, session, repo, "regenerate", full=True))


@router.post("/{ref}/refine", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED,
             responses={404: {"description": "Unknown repository"},
                        409: {"description": "No active adapter yet, or a refine job is already pending"}})
def refine(ref: str, state: StateDep, session: SessionDep, body: RefineIn | None = None) -> JobOut:
    """Queue a refinement: train the active adapter on the repository's own context files (never its held-out
    slice) within a bounded budget; the result is a new version of kind `refined`, scored and promoted only
    through the promotion gate."""
    repo = _get_or_404(session, ref)
    params = body.model_dump(exclude_none=True) if body else {}
    return JobOut.model_validate(_call(registry.request_refine, state, session, repo, **params))


@router.delete("/{ref}/versions/{number}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {}, 409: {}})
def delete_version(ref: str, number: int, state: StateDep, session: SessionDep) -> None:
    """Delete a version (not the active or pinned one)."""
    _call(versions.delete_version, state, session, _get_or_404(session, ref), number)


@router.post("/{ref}/versions/prune", response_model=PruneOut, responses={404: {}})
def prune_versions(ref: str, body: PruneIn, state: StateDep, session: SessionDep) -> PruneOut:
    """Retention policy: keep the newest N versions plus the active and pinned ones."""
    return PruneOut(deleted=_call(versions.prune, state, session, _get_or_404(session, ref), body.keep))


@router.post("/{ref}/webhook-secret", response_model=SecretOut, responses={404: {}})
def rotate_secret(ref: str, session: SessionDep) -> SecretOut:
    """Rotate the webhook secret; the new one is shown once."""
    return SecretOut(webhook_secret=versions.rotate_secret(session, _get_or_404(session, ref)))
