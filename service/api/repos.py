"""/repos: register, list, inspect and delete repositories; list their adapter versions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from service import repos as registry
from service.api.deps import get_session, get_state
from service.api.schemas import JobOut, RepoCreate, RepoCreated, RepoOut, VersionOut
from service.db.models import Repository
from service.gitops import RepoURLError
from service.state import ServiceState

router = APIRouter(prefix="/repos", tags=["repositories"])


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
             responses={409: {"description": "Already registered"}, 422: {"description": "Invalid URL"}})
def create_repo(body: RepoCreate, state: ServiceState = Depends(get_state),
                session: Session = Depends(get_session)) -> RepoCreated:
    """Register a repository and queue its ingest job (clone, extract, generate the adapter)."""
    try:
        repo, job, secret = registry.register_repo(state, session, body.url, body.branch, body.name, body.mode)
    except RepoURLError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except registry.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return RepoCreated(repository=_repo_out(session, repo), job=JobOut.model_validate(job), webhook_secret=secret)


@router.get("", response_model=list[RepoOut])
def list_repos(session: Session = Depends(get_session)) -> list[RepoOut]:
    """All repositories, oldest first."""
    return [_repo_out(session, r) for r in session.scalars(select(Repository).order_by(Repository.id))]


@router.get("/{ref}", response_model=RepoOut, responses={404: {"description": "Unknown repository"}})
def get_repo(ref: str, session: Session = Depends(get_session)) -> RepoOut:
    """One repository by id or name, with its latest job."""
    return _repo_out(session, _get_or_404(session, ref))


@router.delete("/{ref}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"description": "Unknown repository"}})
def delete_repo(ref: str, state: ServiceState = Depends(get_state), session: Session = Depends(get_session)) -> None:
    """Delete a repository with its adapter versions and artifacts."""
    registry.delete_repo(state, session, _get_or_404(session, ref))


@router.get("/{ref}/versions", response_model=list[VersionOut], responses={404: {"description": "Unknown repository"}})
def list_versions(ref: str, session: Session = Depends(get_session)) -> list[VersionOut]:
    """The adapter versions of a repository, oldest first."""
    repo = _get_or_404(session, ref)
    return [VersionOut.model_validate(v) for v in repo.versions]
