"""/webhooks/github and /webhooks/gitlab: verified pushes queue adapter regeneration."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Header, HTTPException, Request, Response, status
from pydantic import BaseModel
from sqlalchemy.orm import Session

from service import webhooks as wh
from service.api.deps import SessionDep, StateDep
from service.state import ServiceState

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


class WebhookResult(BaseModel):
    event: str
    outcome: str
    repositories: list[int] = []
    jobs: list[str] = []


def _json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep (checked before any signature)
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "body is not JSON (or nested too deeply)") from exc
    if not isinstance(payload, dict):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "body must be a JSON object")
    return payload


# One answer for "no repository has this URL" and "wrong signature": a 404 for the first let anyone find out
# which URLs are registered (issue 21 Low 13).
UNVERIFIED = "invalid or missing signature, or no repository registered with this URL"
MAX_DELIVERY_ID = 150


def _delivery_id(provider: str, header_name: str, delivery: str | None) -> str:
    """Push deliveries must carry the provider's delivery id (issue 21 Medium 10)."""
    if not delivery or not delivery.strip():
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"a {provider} push needs its {header_name} header "
                            "(deliveries are remembered so that a replay queues nothing)")
    delivery = delivery.strip()
    if len(delivery) > MAX_DELIVERY_ID or not delivery.isprintable() or not delivery.isascii():
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{header_name} is not a delivery id")
    return delivery


def _handle(state: ServiceState, session: Session, response: Response, provider: str, event_name: str,
            delivery: str | None, body: bytes, verified: list[Any], event: wh.PushEvent | None) -> WebhookResult:
    if event is None:
        response.status_code = status.HTTP_200_OK
        return WebhookResult(event=event_name, outcome="pong", repositories=[r.id for r in verified])
    assert delivery is not None
    window = state.settings.webhook_replay_window_s
    keys = wh.replay_keys(provider, delivery, body)
    done = wh.seen_delivery(session, keys, window)
    if done is not None:  # a redelivery, or the same signed body replayed with a new id: nothing is queued
        return WebhookResult(event=event_name, outcome=f"duplicate delivery ({done.outcome})",
                             repositories=[done.repository_id] if done.repository_id else [],
                             jobs=[done.job_id] if done.job_id else [])
    targets = [r for r in verified if wh.tracks_branch(r, event)]
    if not targets:
        response.status_code = status.HTTP_202_ACCEPTED
        outcome = f"ignored: no registered repository tracks branch {event.branch!r}"
        wh.record_delivery(session, keys, verified[0].id, event_name, outcome, None, window)
        return WebhookResult(event=event_name, outcome=outcome)
    jobs, outcomes = [], []
    for repo in targets:
        job, outcome = wh.schedule_push(state, session, repo, event)
        outcomes.append(outcome)
        if job is not None:
            jobs.append(job.id)
    outcome = "; ".join(sorted(set(outcomes)))
    wh.record_delivery(session, keys, targets[0].id, event_name, outcome, jobs[0] if jobs else None, window)
    return WebhookResult(event=event_name, outcome=outcome, repositories=[r.id for r in targets], jobs=jobs)


@router.post("/github", response_model=WebhookResult, status_code=status.HTTP_202_ACCEPTED,
             responses={400: {}, 401: {}})
async def github(request: Request, response: Response, state: StateDep, session: SessionDep,
                 x_github_event: str = Header(""), x_hub_signature_256: str | None = Header(None),
                 x_github_delivery: str | None = Header(None)) -> WebhookResult:
    """GitHub push/ping webhook, signed with the repository's secret (`X-Hub-Signature-256`); a push needs its
    `X-GitHub-Delivery` id, and a delivery already handled (same id, or the same signed body) queues nothing."""
    body = await request.body()
    payload = _json(body)
    if x_github_event not in ("push", "ping"):
        return WebhookResult(event=x_github_event or "unknown", outcome="ignored: only push and ping are handled")
    repo_info = payload.get("repository")
    repo_info = repo_info if isinstance(repo_info, dict) else {}
    urls = [u for u in (repo_info.get(k) for k in ("clone_url", "html_url", "ssh_url", "git_url")) if isinstance(u, str)]
    candidates = wh.repos_for_urls(session, urls)
    if not candidates:  # the same work as a wrong signature, so timing does not tell them apart either
        wh.verify_github("not-a-secret", body, x_hub_signature_256)
    verified = [r for r in candidates if wh.verify_github(r.webhook_secret, body, x_hub_signature_256)]
    if not verified:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, UNVERIFIED)
    event, delivery = None, None
    if x_github_event == "push":
        delivery = _delivery_id("GitHub", "X-GitHub-Delivery", x_github_delivery)
        try:
            event = wh.parse_github_push(payload)
        except ValueError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    return _handle(state, session, response, "github", x_github_event, delivery, body, verified, event)


@router.post("/gitlab", response_model=WebhookResult, status_code=status.HTTP_202_ACCEPTED,
             responses={400: {}, 401: {}})
async def gitlab(request: Request, response: Response, state: StateDep, session: SessionDep,
                 x_gitlab_event: str = Header(""), x_gitlab_token: str | None = Header(None),
                 x_gitlab_event_uuid: str | None = Header(None), idempotency_key: str | None = Header(None)) -> WebhookResult:
    """GitLab push webhook, authenticated by the repository's secret in `X-Gitlab-Token`; a push needs its
    `X-Gitlab-Event-UUID` (or `Idempotency-Key`), and a delivery already handled queues nothing."""
    body = await request.body()
    payload = _json(body)
    if x_gitlab_event != "Push Hook":
        return WebhookResult(event=x_gitlab_event or "unknown", outcome="ignored: only Push Hook is handled")
    project = payload.get("project")
    project = project if isinstance(project, dict) else {}
    urls = [u for u in (project.get(k) for k in ("git_http_url", "web_url", "git_ssh_url")) if isinstance(u, str)]
    candidates = wh.repos_for_urls(session, urls)
    verified = [r for r in candidates if wh.verify_gitlab(r.webhook_secret, x_gitlab_token)]
    if not verified:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, UNVERIFIED)
    delivery = _delivery_id("GitLab", "X-Gitlab-Event-UUID (or Idempotency-Key)",
                            idempotency_key or x_gitlab_event_uuid)
    try:
        event = wh.parse_gitlab_push(payload)
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    return _handle(state, session, response, "gitlab", x_gitlab_event, delivery, body, verified, event)
