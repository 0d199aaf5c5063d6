"""Push webhooks (GitHub, GitLab): signature checks, matching a push to repositories, coalescing jobs."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.db.models import Job, Repository, WebhookDelivery, utcnow
from service.jobs.queue import enqueue_or_withdraw
from service.state import ServiceState

ZERO_SHA = "0" * 40


def github_signature(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_github(secret: str | None, body: bytes, header: str | None) -> bool:
    """Constant-time check of `X-Hub-Signature-256` against the repository's secret."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(github_signature(secret, body), header.strip())


def verify_gitlab(secret: str | None, header: str | None) -> bool:
    """Constant-time check of `X-Gitlab-Token`."""
    if not secret or header is None:
        return False
    return hmac.compare_digest(secret.encode(), header.encode())


@dataclass
class PushEvent:
    """What we need from a push, whichever provider sent it."""

    urls: list[str]
    branch: str | None
    default_branch: str | None
    before: str | None
    after: str | None
    deleted: bool
    forced: bool
    extra: dict[str, Any] = field(default_factory=dict)


def _branch(ref: str | None) -> str | None:
    return ref[len("refs/heads/"):] if ref and ref.startswith("refs/heads/") else None


def parse_github_push(payload: dict[str, Any]) -> PushEvent:
    """Fields of a GitHub `push` payload; raises ValueError if it is not one."""
    repo = payload.get("repository")
    if not isinstance(repo, dict) or "ref" not in payload:
        raise ValueError("not a push payload: repository or ref missing")
    after = payload.get("after")
    return PushEvent(
        urls=[u for u in (repo.get("clone_url"), repo.get("html_url"), repo.get("ssh_url"), repo.get("git_url"))
              if isinstance(u, str)],
        branch=_branch(payload.get("ref")), default_branch=repo.get("default_branch"),
        before=payload.get("before"), after=after,
        deleted=bool(payload.get("deleted")) or after == ZERO_SHA, forced=bool(payload.get("forced")),
    )


def parse_gitlab_push(payload: dict[str, Any]) -> PushEvent:
    """Fields of a GitLab `Push Hook` payload; raises ValueError if it is not one."""
    project = payload.get("project")
    if payload.get("object_kind") != "push" or not isinstance(project, dict):
        raise ValueError("not a push payload")
    after = payload.get("after") or payload.get("checkout_sha")
    return PushEvent(
        urls=[u for u in (project.get("git_http_url"), project.get("web_url"), project.get("git_ssh_url"))
              if isinstance(u, str)],
        branch=_branch(payload.get("ref")), default_branch=project.get("default_branch"),
        before=payload.get("before"), after=after, deleted=after in (None, ZERO_SHA), forced=False,
    )


def _url_key(url: str) -> str:
    """Compare URLs by host and path, ignoring scheme, credentials, `.git` and trailing slashes."""
    u = url.strip().lower().rstrip("/")
    if u.endswith(".git"):
        u = u[:-4]
    if "://" in u:
        u = u.split("://", 1)[1]
        u = u.split("@", 1)[-1]
    elif "@" in u and ":" in u:  # scp-like git@host:owner/name
        u = u.split("@", 1)[1].replace(":", "/", 1)
    return u


def repos_for_urls(session: Session, urls: list[str]) -> list[Repository]:
    """Registered repositories (any branch) with one of these URLs."""
    keys = {_url_key(u) for u in urls}
    return [r for r in session.scalars(select(Repository).order_by(Repository.id)) if _url_key(r.url) in keys]


def tracks_branch(repo: Repository, event: PushEvent) -> bool:
    """Whether a push to `event.branch` concerns `repo` ("" tracks the default branch)."""
    tracked = repo.branch or event.default_branch
    return event.branch is not None and tracked == event.branch


def schedule_push(state: ServiceState, session: Session, repo: Repository, event: PushEvent) -> tuple[Job | None, str]:
    """Queue (or coalesce into a queued) regenerate job for a push; returns (job, outcome)."""
    if event.deleted:
        repo.status_message = f"branch {event.branch} was deleted upstream; keeping the last adapter"
        session.commit()
        return None, "branch deleted: adapter kept, nothing queued"
    queued = session.scalar(select(Job).where(Job.repository_id == repo.id, Job.status == "queued",
                                              Job.kind.in_(("regenerate", "ingest"))).limit(1))
    if queued is not None:
        # Latest commit wins: the queued job fetches the branch head when it runs.
        queued.params = {**(queued.params or {}), "after": event.after, "coalesced": True}
        session.commit()
        return queued, "coalesced into queued job"
    job = Job(kind="regenerate", repository_id=repo.id, status="queued", message="push received",
              params={"after": event.after, "before": event.before, "forced": event.forced})
    session.add(job)
    session.commit()
    enqueue_or_withdraw(state, session, job)  # QueueUnavailable -> 503: the delivery is not recorded
    return job, "regenerate job queued"


def replay_keys(provider: str, delivery_id: str, body: bytes) -> list[str]:
    """What a replay is recognised by: the provider's delivery id, and the signed body itself (a signature does
    not cover the delivery id header, so a captured body re-sent with a new id is the same delivery)."""
    return [f"{provider}:{delivery_id}", f"{provider}:body:{hashlib.sha256(body).hexdigest()}"]


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def seen_delivery(session: Session, keys: str | list[str] | None, window_s: float | None = None
                  ) -> WebhookDelivery | None:
    """A delivery we already handled within the window (providers redeliver with the same id; a replay may
    carry a new one), else None."""
    if not keys:
        return None
    cutoff = utcnow() - dt.timedelta(seconds=window_s) if window_s else None
    for key in [keys] if isinstance(keys, str) else keys:
        row = session.get(WebhookDelivery, key)
        if row is not None and (cutoff is None or row.received_at is None or _aware(row.received_at) >= cutoff):
            return row
    return None


def record_delivery(session: Session, keys: str | list[str] | None, repo_id: int | None, event: str, outcome: str,
                    job_id: str | None, window_s: float | None = None) -> None:
    """Remember a handled delivery under each of its keys (received now); forget deliveries older than the
    window, so the table stays bounded."""
    for key in [keys] if isinstance(keys, str) else (keys or []):
        session.merge(WebhookDelivery(id=key, repository_id=repo_id, event=event, outcome=outcome[:200],
                                      job_id=job_id, received_at=utcnow()))
    session.commit()
    if window_s:
        try:
            session.execute(delete(WebhookDelivery).where(
                WebhookDelivery.received_at < utcnow() - dt.timedelta(seconds=window_s)))
            session.commit()
        except Exception:  # noqa: BLE001 - pruning is housekeeping; the delivery is recorded either way
            session.rollback()
