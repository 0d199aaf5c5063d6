"""Read-side helpers: turn DB rows and engine stats into what the dashboard templates show."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import AdapterVersion, Job, Repository
from service.state import ServiceState

log = logging.getLogger(__name__)
ACTIVE_JOB = ("queued", "running")


@dataclass
class VersionRow:
    """One adapter version as the history table shows it."""

    version: AdapterVersion
    eval_metrics: dict[str, float] = field(default_factory=dict)
    note: str | None = None


def eval_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    """Numeric evaluation metrics: top-level `eval_*` keys and the entries of a nested `eval` dict."""
    metrics = metrics or {}
    out = {k: float(v) for k, v in metrics.items()
           if k.startswith("eval_") and isinstance(v, (int, float)) and not isinstance(v, bool)}
    nested = metrics.get("eval")
    if isinstance(nested, dict):
        out.update({f"eval_{k}": float(v) for k, v in nested.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and f"eval_{k}" not in out})
    return out


def promotion_note(version: AdapterVersion) -> str | None:
    """Why a candidate version was not promoted (from its metrics or status), if it was not."""
    metrics = version.metrics or {}
    for key in ("not_promoted_reason", "promotion_reason", "rejected_reason"):
        if metrics.get(key):
            return str(metrics[key])
    promotion = metrics.get("promotion")
    if isinstance(promotion, dict) and promotion.get("promoted") is False:
        return str(promotion.get("reason") or "not promoted")
    if version.status != "ready":
        return f"status {version.status}"
    return None


def version_rows(repo: Repository) -> list[VersionRow]:
    """The version history, newest first."""
    return [VersionRow(v, eval_metrics(v.metrics), promotion_note(v))
            for v in sorted(repo.versions, key=lambda v: v.version, reverse=True)]


def eval_loss_points(repo: Repository) -> list[tuple[int, float]]:
    """(version, eval loss) for every version that has one, oldest first."""
    points = []
    for v in sorted(repo.versions, key=lambda v: v.version):
        loss = eval_metrics(v.metrics).get("eval_loss")
        if loss is not None:
            points.append((v.version, loss))
    return points


def recent_jobs(session: Session, repo_id: int | None = None, limit: int = 50) -> list[Job]:
    """Newest jobs first, of one repository or of all."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    if repo_id is not None:
        query = query.where(Job.repository_id == repo_id)
    return list(session.scalars(query))


def repo_names(session: Session) -> dict[int, str]:
    """Repository id -> name, for labelling jobs."""
    return {rid: name for rid, name in session.execute(select(Repository.id, Repository.name))}


def engine_stats(state: ServiceState) -> Any | None:
    """`serving_engine.stats()` when an engine is present and answers; None otherwise."""
    engine = state.serving_engine
    if engine is None or not hasattr(engine, "stats"):
        return None
    try:
        return engine.stats()
    except Exception:  # noqa: BLE001 - a broken engine must not take the dashboard down
        log.warning("engine stats failed", exc_info=True)
        return None
