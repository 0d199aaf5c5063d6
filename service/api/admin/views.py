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
    eval_lines: list[str] = field(default_factory=list)


# The scores shown per version (the candidate arm of `metrics.eval`), in this order.
SHOWN = ("loss", "ident_loss", "ident_em", "invented_rate")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def eval_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    """Numeric evaluation metrics: top-level `eval_*` keys, the numbers of a nested `eval` dict, and the scores of
    its `candidate` arm (the version itself, as measured on the held-out files)."""
    metrics = metrics or {}
    out = {k: float(v) for k, v in metrics.items() if k.startswith("eval_") and _num(v)}
    nested = metrics.get("eval")
    if isinstance(nested, dict):
        out.update({f"eval_{k}": float(v) for k, v in nested.items() if _num(v) and f"eval_{k}" not in out})
        cand = nested.get("candidate")
        if isinstance(cand, dict):
            out.update({f"eval_{k}": float(cand[k]) for k in SHOWN if _num(cand.get(k))})
    return out


def eval_lines(metrics: dict[str, Any] | None) -> list[str]:
    """The "eval metrics" cell: the version's held-out scores beside the base model's and the then-active
    version's, or why there are none ("too small to measure: N files")."""
    metrics = metrics or {}
    block = metrics.get("eval")
    if isinstance(block, dict) and isinstance(block.get("candidate"), dict):
        cand, base = block["candidate"], block.get("base") or {}
        active = block.get("active") or {}
        lines = []
        for k in SHOWN:
            if not _num(cand.get(k)):
                continue
            refs = [f"base {base[k]:.4g}"] if _num(base.get(k)) else []
            if _num(active.get(k)):
                refs.append(f"v{block.get('active_version', '?')} {active[k]:.4g}")
            lines.append(f"{k} {cand[k]:.4g}" + (f" ({', '.join(refs)})" if refs else ""))
        if _num(block.get("heldout_files")):
            lines.append(f"{int(block['heldout_files'])} held-out files, {float(block.get('seconds') or 0):.1f} s")
        return lines
    if isinstance(block, dict) and block.get("skipped"):
        return [str(block["skipped"])]
    if isinstance(block, dict) and block.get("error"):
        return [f"scoring failed: {block['error']}"]
    return [f"{k} {v:.5g}" for k, v in eval_metrics(metrics).items()]


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
    return [VersionRow(v, eval_metrics(v.metrics), promotion_note(v), eval_lines(v.metrics))
            for v in sorted(repo.versions, key=lambda v: v.version, reverse=True)]


def eval_loss_points(repo: Repository) -> list[tuple[int, float]]:
    """(version, held-out loss) for every version that has one, oldest first."""
    return eval_series(repo).get("held-out loss", [])


def eval_series(repo: Repository) -> dict[str, list[tuple[int, float]]]:
    """The plot's lines: each version's held-out loss (all tokens) and repository-identifier loss, oldest first."""
    loss: list[tuple[int, float]] = []
    ident: list[tuple[int, float]] = []
    for v in sorted(repo.versions, key=lambda v: v.version):
        m = eval_metrics(v.metrics)
        if "eval_loss" in m:
            loss.append((v.version, m["eval_loss"]))
        if "eval_ident_loss" in m:
            ident.append((v.version, m["eval_ident_loss"]))
    return {k: pts for k, pts in (("held-out loss", loss), ("identifier loss", ident)) if pts}


def eval_absent_reason(repo: Repository) -> str:
    """What the plot says when no version has scores: the newest version's reason, else "no eval metrics yet"."""
    for v in sorted(repo.versions, key=lambda v: v.version, reverse=True):
        block = (v.metrics or {}).get("eval")
        if isinstance(block, dict) and (block.get("skipped") or block.get("error")):
            return str(block.get("skipped") or f"scoring failed: {block['error']}")
    return "no eval metrics yet"


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
