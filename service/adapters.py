"""Building a version: generate (or reuse) the adapter for a context, score it on the held-out slice against the
base model and the active version, and record it through the store (`service.store`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from service import evaluation, store
from service.db.models import AdapterVersion, ContextSnapshot, Repository
from service.jobs.base import JobError

if TYPE_CHECKING:
    from service.state import ServiceState

log = logging.getLogger(__name__)


def build_adapter_version(
    state: ServiceState, repo_id: int, ctx: Any, commit_sha: str, report: Callable[[float, str], None],
    evolve: Callable[[Any], Any] | None = None, heldout: Any = None,
) -> AdapterVersion:
    """Record the context snapshot, generate (or reuse) the adapter, measure it and record a new version.

    `ctx` is what the hypernetwork may see (the repository without its held-out files); `heldout`
    (`service.evaluation.HeldOut`) is the slice the version is scored on. `evolve(generator) -> EvolvingState`
    switches to evolving mode: the adapter is generated from the repository's recurrent state instead of the
    static context, and keyed by the state's digest. The new version becomes active only through the
    promotion gate (`record_version`).
    """
    settings = state.settings
    summary = ctx.summary() if hasattr(ctx, "summary") else {"stats": dict(ctx.stats)}
    with state.sessions.begin() as s:
        repo = s.get(Repository, repo_id)
        if repo is None:
            raise JobError("repository was deleted while the job ran")
        s.add(ContextSnapshot(repository_id=repo_id, commit_sha=commit_sha, context_digest=ctx.digest,
                              stats=json.loads(json.dumps(summary, default=str))))
        repo.status = "generating"

    report(0.5, "loading the hypernetwork")
    generator = state.generator()
    hypernet_version = generator.version_id
    evolving = evolve(generator) if evolve is not None else None
    digest = evolving.digest if evolving is not None else ctx.digest
    kind = "evolving" if evolving is not None else "generated"

    # Same context + same hypernetwork = same adapter: reuse any stored artifact, no recompute.
    existing = store.find_reusable(state, digest, hypernet_version)
    metrics: dict[str, Any] = {}
    if existing is not None:
        sha, path = existing.artifact_sha256, Path(existing.artifact_path)
        metrics["reused_from"] = {"repository_id": existing.repository_id, "version": existing.version}
        report(0.6, f"reusing adapter {sha[:12]} (same context and hypernetwork)")
    else:
        report(0.6, "generating the adapter" + (" from the evolving state" if evolving is not None else ""))
        if evolving is not None:
            from hypernet.evolve import generate_from_state

            artifact = generate_from_state(evolving, generator, settings.artifact_dir, ctx)
            metrics["evolving"] = {"steps": evolving.steps, "tokens": len(evolving.weights), "lines": len(evolving.lines)}
        else:
            artifact = generator.generate(ctx, settings.artifact_dir)
        sha, path = artifact.sha256, Path(artifact.path)
        metrics["timings_ms"] = getattr(artifact, "timings_ms", {})
    stats = summary.get("stats", summary)
    metrics["context"] = {k: stats[k] for k in ("files", "definitions") if k in stats}
    if heldout is not None:
        metrics["context"]["heldout_files"] = len(heldout.paths)

    unchanged = store.same_as_latest(state, repo_id, context_digest=digest, hypernet_version=hypernet_version,
                                     sha=sha, commit_sha=commit_sha)
    if unchanged is not None:
        return unchanged  # nothing changed for the model: the current version moves to this commit
    return record_version(state, repo_id, kind=kind, commit_sha=commit_sha, hypernet_version=hypernet_version,
                          context_digest=digest, sha=sha, path=path, metrics=metrics, heldout=heldout,
                          report=report)


def record_version(
    state: ServiceState, repo_id: int, *, kind: str, commit_sha: str, hypernet_version: str, context_digest: str,
    sha: str, path: Path, metrics: dict[str, Any], heldout: Any, report: Callable[[float, str], None],
) -> AdapterVersion:
    """Score a stored adapter against the base model and the active version, then add it as a new version;
    it becomes active when the promotion gate passes (and no version is pinned). The gate's decision and
    the scores go into the version's metrics (`eval`, `promotion`)."""
    settings = state.settings
    with state.sessions() as s:
        repo = s.get(Repository, repo_id)
        if repo is None:
            raise JobError("repository was deleted while the job ran")
        active_number = next((v.version for v in repo.versions if v.version == repo.active_version), None)
    if heldout is None or not settings.eval_enabled:
        eval_block: dict[str, Any] = {"skipped": "evaluation disabled" if not settings.eval_enabled
                                      else "no held-out slice"}
    else:
        report(0.7, "scoring the new version on the held-out files")
        try:
            eval_block = _score(state, repo_id, path, active_number, heldout, report)
        except Exception as exc:  # noqa: BLE001 - a scoring failure must not lose the version; it is recorded
            log.warning("scoring repository %s failed: %s", repo_id, exc, exc_info=True)
            eval_block = {"error": f"{type(exc).__name__}: {exc}"}
    decision = evaluation.gate(eval_block, settings.promote_metric, settings.promote_tolerance,
                               has_active=active_number is not None, kind=kind)
    version = store.add_version(state, repo_id, kind=kind, commit_sha=commit_sha, hypernet_version=hypernet_version,
                                context_digest=context_digest, sha=sha, path=path,
                                metrics={**metrics, "eval": eval_block}, decision=decision)
    reason = version.metrics["promotion"]["reason"]
    if version.is_active:
        report(0.95, f"version {version.version} stored and active ({sha[:12]}; {reason})")
    else:
        report(0.95, f"version {version.version} stored, not promoted: {reason}")
    return version


def _score(state: ServiceState, repo_id: int, path: Path, active_number: int | None, heldout: Any,
           report: Callable[[float, str], None]) -> dict[str, Any]:
    """The eval block of a candidate: scores of base, candidate and (if any) the active version on `heldout`."""
    arms: dict[str, Any] = {"base": None, "candidate": evaluation.load_tensors(path)}
    if active_number is not None:
        with state.sessions() as s:
            active_row = s.scalar(select(AdapterVersion).where(
                AdapterVersion.repository_id == repo_id, AdapterVersion.version == active_number))
            active_dir = store.adapter_path(state, active_row) if active_row is not None else None
        if active_dir is not None:
            arms["active"] = evaluation.load_tensors(active_dir)
    eval_block = evaluation.score(state, heldout, arms, report=lambda _f, m: report(0.75, m))
    if active_number is not None:
        eval_block["active_version"] = active_number
    return eval_block
