"""Dashboard pages (GET): repositories, one repository's versions, jobs, engine, login."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from service import repos as registry
from service.api.admin import auth
from service.api.admin.auth import ViewerDep
from service.api.admin.plot import series_plot_svg
from service.api.admin.templating import render
from service.api.admin.views import (
    ACTIVE_JOB,
    engine_stats,
    eval_absent_reason,
    eval_series,
    recent_jobs,
    repo_names,
    version_rows,
)
from service.api.deps import SessionDep, StateDep
from service.db.models import Repository

router = APIRouter(prefix="/admin", include_in_schema=False)


def repo_or_404(session: Session, repo_id: int) -> Repository:
    """The repository with this id; 404 otherwise."""
    repo = session.get(Repository, repo_id)
    if repo is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"repository {repo_id} not found")
    return repo


def repo_context(request: Request, session: Session, repo: Repository, **extra: object) -> dict[str, Any]:
    """Everything the repository page shows (also used by actions that answer with that page)."""
    base = str(request.base_url).rstrip("/")
    series = eval_series(repo)
    rows = recent_jobs(session, repo.id, limit=10)
    return dict(repo=repo, versions=version_rows(repo), plot=series_plot_svg(series), has_eval=bool(series),
                no_eval=eval_absent_reason(repo),
                promote_metric=request.app.state.c2l.settings.promote_metric,
                promote_tolerance=request.app.state.c2l.settings.promote_tolerance,
                jobs=rows, names={repo.id: repo.name}, repo_id=repo.id,
                live=any(j.status in ACTIVE_JOB for j in rows),
                webhooks={"GitHub": f"{base}/webhooks/github", "GitLab": f"{base}/webhooks/gitlab"},
                **extra)


@router.get("/login")
def login_page(request: Request, next: str = "/admin") -> Response:
    """The login form (straight to the dashboard when no login is needed)."""
    settings = request.app.state.c2l.settings
    if auth.current_principal(request) is not None:
        return RedirectResponse(safe_next(next), status.HTTP_303_SEE_OTHER)
    return render(request, "login.html", None, next=safe_next(next),
                  configured=auth.auth_configured(settings))


def safe_next(target: str | None) -> str:
    """Only redirect inside the dashboard (no open redirects)."""
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return "/admin"


@router.get("")
def repositories(request: Request, principal: ViewerDep, state: StateDep, session: SessionDep) -> Response:
    """All repositories with status, branch, commit, active/pinned version and mode."""
    repos = list(session.scalars(select(Repository).order_by(Repository.id)))
    latest = {r.id: registry.latest_job(session, r.id) for r in repos}
    return render(request, "repos.html", principal, repos=repos, latest=latest, engine=engine_stats(state),
                  has_engine=state.serving_engine is not None)


@router.get("/repos/{repo_id}")
def repository(repo_id: int, request: Request, principal: ViewerDep, session: SessionDep) -> Response:
    """One repository: version history, eval-loss plot, actions, webhook settings, recent jobs."""
    repo = repo_or_404(session, repo_id)
    return render(request, "repo.html", principal, **repo_context(request, session, repo))


@router.get("/jobs")
def jobs(request: Request, principal: ViewerDep, session: SessionDep) -> Response:
    """Recent jobs of every repository, with live progress."""
    rows = recent_jobs(session)
    return render(request, "jobs.html", principal, jobs=rows, names=repo_names(session), repo_id=None,
                  live=any(j.status in ACTIVE_JOB for j in rows))


@router.get("/jobs/table")
def jobs_table(request: Request, principal: ViewerDep, session: SessionDep, repo: int | None = None) -> Response:
    """The jobs table alone, polled by the pages while a job is queued or running."""
    rows = recent_jobs(session, repo, limit=10 if repo else 50)
    return render(request, "_jobs_table.html", principal, jobs=rows, names=repo_names(session), repo_id=repo,
                  live=any(j.status in ACTIVE_JOB for j in rows))


@router.get("/engine")
def engine(request: Request, principal: ViewerDep, state: StateDep) -> Response:
    """Loaded adapters and slots, requests per adapter, latency percentiles."""
    return render(request, "engine.html", principal, engine=engine_stats(state),
                  has_engine=state.serving_engine is not None)
