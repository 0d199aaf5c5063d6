"""Dashboard actions (POST forms): each one calls the same service functions as the REST API."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from starlette.responses import RedirectResponse, Response

from service import repos as registry
from service import versions
from service.api.admin import auth
from service.api.admin.auth import AdminDep, require_admin
from service.api.admin.csrf import verify_csrf
from service.api.admin.pages import repo_context, repo_or_404, safe_next
from service.api.admin.templating import flash, render
from service.api.deps import SessionDep, StateDep
from service.api.limits import register_rate_limit
from service.db.models import Job
from service.repourl import RepoURLError

# Order matters: who you are (401/403) is checked before the CSRF token (403).
log = logging.getLogger(__name__)
router = APIRouter(prefix="/admin", include_in_schema=False)
acting = [Depends(require_admin), Depends(verify_csrf)]


def _back(target: str) -> RedirectResponse:
    return RedirectResponse(target, status.HTTP_303_SEE_OTHER)


def _attempt(request: Request, ok: str | Callable[[Any], str], fn: Callable[..., Any], *args: Any,
             **kwargs: Any) -> Any:
    """Run a service call; its Conflict/NotFound becomes an error message on the next page."""
    try:
        result = fn(*args, **kwargs)
    except (registry.Conflict, registry.NotFound, RepoURLError, ValueError) as exc:
        flash(request, "error", str(exc))
        return None
    flash(request, "ok", ok if isinstance(ok, str) else ok(result))
    return result if result is not None else True


@router.post("/login", dependencies=[Depends(verify_csrf)])
def login(request: Request, username: str = Form(""), password: str = Form(""), next: str = Form("/admin")) -> Response:
    """Check the credentials and start a session."""
    settings = request.app.state.c2l.settings
    throttle = _login_throttle(request)
    client = request.client.host if request.client else "unknown"
    keys = (f"ip:{client}", f"user:{username.strip().lower()[:100]}")
    wait = throttle.retry_after(*keys)
    if wait > 0:  # too many failures from this client or for this user: not even checked
        log.warning("dashboard login throttled (client %s)", client)
        page = render(request, "login.html", None, status_code=status.HTTP_429_TOO_MANY_REQUESTS,
                      next=safe_next(next), configured=auth.auth_configured(settings),
                      error="too many failed logins; try again later")
        page.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
        return page
    principal = auth.authenticate(settings, username, password)
    if principal is None:
        throttle.failed(*keys)
        log.warning("dashboard login failed (client %s)", client)  # the audit trail records it too
        return render(request, "login.html", None, status_code=status.HTTP_401_UNAUTHORIZED, next=safe_next(next),
                      configured=auth.auth_configured(settings), error="wrong user name or password")
    throttle.succeeded(keys[1])
    auth.login(request, principal)
    return _back(safe_next(next))


def _login_throttle(request: Request):
    from service.api.admin.sessions import LoginThrottle

    app_state = request.app.state
    throttle = getattr(app_state, "login_throttle", None)
    if throttle is None:
        settings = app_state.c2l.settings
        throttle = app_state.login_throttle = LoginThrottle(settings.login_max_failures,
                                                            settings.login_failure_window_s)
    return throttle


@router.post("/logout", dependencies=[Depends(verify_csrf)])
def logout(request: Request) -> Response:
    """End the session."""
    auth.logout(request)
    return _back("/admin/login")


@router.post("/repos", dependencies=[*acting, Depends(register_rate_limit)])
def register(request: Request, principal: AdminDep, state: StateDep, session: SessionDep, url: str = Form(...),
             branch: str = Form(""), name: str = Form(""), mode: str = Form("static")) -> Response:
    """Register a repository; its page shows the webhook secret once."""
    if mode not in ("static", "evolving"):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "mode must be static or evolving")
    created = _attempt(request, "repository registered; ingest job queued", registry.register_repo, state, session,
                       url.strip(), branch.strip() or None, name.strip() or None, mode)
    if created is None:
        return _back("/admin")
    repo, _job, secret = created
    return render(request, "repo.html", principal, **repo_context(request, session, repo, new_secret=secret))


@router.post("/repos/{repo_id}/regenerate", dependencies=acting)
def regenerate(repo_id: int, request: Request, state: StateDep, session: SessionDep) -> Response:
    """Queue a full regeneration from the branch head (the same job as POST /repos/{ref}/regenerate)."""
    repo = repo_or_404(session, repo_id)
    _attempt(request, "regeneration queued", registry.enqueue_job, state, session, repo, "regenerate",
             full=True)
    return _back(f"/admin/repos/{repo_id}")


@router.post("/repos/{repo_id}/refine", dependencies=acting)
def refine(repo_id: int, request: Request, state: StateDep, session: SessionDep) -> Response:
    """Queue a refinement of the active adapter (the same job as POST /repos/{ref}/refine)."""
    repo = repo_or_404(session, repo_id)
    _attempt(request, "refinement queued", registry.request_refine, state, session, repo)
    return _back(f"/admin/repos/{repo_id}")


@router.post("/repos/{repo_id}/rollback", dependencies=acting)
def rollback(repo_id: int, request: Request, state: StateDep, session: SessionDep, version: str = Form("")) -> Response:
    """Activate an earlier version (default: the one before the active one)."""
    repo = repo_or_404(session, repo_id)
    number = int(version) if version.strip().isdigit() else None
    _attempt(request, lambda r: f"rolled back: version {r.active_version} is active", versions.rollback, state,
             session, repo, number)
    return _back(f"/admin/repos/{repo_id}")


@router.post("/repos/{repo_id}/versions/{number}/pin", dependencies=acting)
def pin(repo_id: int, number: int, request: Request, state: StateDep, session: SessionDep) -> Response:
    """Pin a version: it is served until unpinned, whatever pushes arrive."""
    repo = repo_or_404(session, repo_id)
    _attempt(request, f"version {number} pinned", versions.pin, state, session, repo, number)
    return _back(f"/admin/repos/{repo_id}")


@router.post("/repos/{repo_id}/unpin", dependencies=acting)
def unpin(repo_id: int, request: Request, state: StateDep, session: SessionDep) -> Response:
    """Remove the pin; the newest ready version becomes active."""
    repo = repo_or_404(session, repo_id)
    _attempt(request, "unpinned", versions.unpin, state, session, repo)
    return _back(f"/admin/repos/{repo_id}")


@router.post("/repos/{repo_id}/versions/{number}/delete", dependencies=acting)
def delete_version(repo_id: int, number: int, request: Request, state: StateDep, session: SessionDep) -> Response:
    """Delete one version (never the active or pinned one)."""
    repo = repo_or_404(session, repo_id)
    _attempt(request, f"version {number} deleted", versions.delete_version, state, session, repo, number)
    return _back(f"/admin/repos/{repo_id}")


@router.post("/repos/{repo_id}/delete", dependencies=acting)
def delete_repo(repo_id: int, request: Request, state: StateDep, session: SessionDep) -> Response:
    """Delete the repository with its versions and artifacts."""
    repo = repo_or_404(session, repo_id)
    name = repo.name
    _attempt(request, f"repository {name} deleted", registry.delete_repo, state, session, repo)
    return _back("/admin")


@router.post("/repos/{repo_id}/webhook-secret", dependencies=acting)
def rotate_secret(repo_id: int, request: Request, principal: AdminDep, session: SessionDep) -> Response:
    """Rotate the webhook secret and show the new one once (never stored in the cookie)."""
    repo = repo_or_404(session, repo_id)
    secret = versions.rotate_secret(session, repo)
    flash(request, "ok", "webhook secret rotated; the old one no longer verifies")
    return render(request, "repo.html", principal, **repo_context(request, session, repo, new_secret=secret))


@router.post("/jobs/{job_id}/retry", dependencies=acting)
def retry(job_id: str, request: Request, state: StateDep, session: SessionDep, next: str = Form("/admin/jobs")) -> Response:
    """Queue the failed job's kind again for its repository."""
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} not found")
    _attempt(request, "job queued again", registry.retry_job, state, session, job)
    return _back(safe_next(next))
