"""The refine job: train the active adapter on the repository's own context files, then measure and gate it.

The held-out slice is never trained on; the result is a new version of kind `refined` that goes through the same
promotion gate as a push. A failure at any point (including a job killed mid-run) leaves the active version
serving: nothing is written before training ends, and the artifact is content-addressed and renamed into place.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from service import evaluation, locks
from service.adapters import record_version
from service.db.models import AdapterVersion, Job, Repository
from service.jobs.base import JobError, Reporter
from service.jobs.queue import enqueue_or_withdraw
from service.jobs.workspace import checkout_dir, load_context
from service.repos import pending_refine
from service.store import adapter_path

if TYPE_CHECKING:
    from hypernet.refine import RefineConfig
    from service.settings import Settings
    from service.state import ServiceState

log = logging.getLogger(__name__)


def refine_config(settings: Settings, params: dict[str, Any] | None = None) -> RefineConfig:
    """The refinement budget and loss from the settings, with a job's overrides (steps, max_seconds, lr, method)."""
    from hypernet.refine import RefineConfig

    params = params or {}
    return RefineConfig(
        steps=int(params.get("steps") or settings.refine_steps),
        max_seconds=float(params.get("max_seconds") or settings.refine_max_seconds),
        lr=float(params.get("lr") or settings.refine_lr), lr_decay=settings.refine_lr_decay,
        select=settings.refine_select,
        kl_weight=settings.refine_kl_weight, kl_identifiers=settings.refine_kl_identifiers,
        ident_weight=settings.refine_ident_weight,
        seq_len=settings.refine_seq_len, batch=settings.refine_batch,
        sample_by_identifiers=settings.refine_sample_by_identifiers,
        method=str(params.get("method") or settings.refine_method),
    )


def queue_refine_after(state: ServiceState, repo_id: int) -> str:
    """After an ingest (CODE2LORA_REFINE_AFTER_INGEST): queue a refine job unless one is pending. A suffix for
    the ingest job's message."""
    with state.sessions() as s:
        repo = s.get(Repository, repo_id)
        if repo is None or repo.active_version is None or pending_refine(s, repo_id) is not None:
            return ""
        job = Job(kind="refine", repository_id=repo_id, status="queued", message="waiting for a worker",
                  params={"after_ingest": True})
        s.add(job)
        s.commit()
        try:
            enqueue_or_withdraw(state, s, job)
        except Exception as exc:  # noqa: BLE001 - the ingest succeeded; a refinement can be asked for later
            log.warning("could not queue the refine job after ingest: %s", exc)
            return ""
        return f"; refine job {job.id} queued"


def run_refine(state: ServiceState, job: Job, report: Reporter) -> str:
    """Refine the repository's active adapter (under the repository lock) and record the result."""
    repo_id = locks.lock_for_job(state, job, report)
    try:
        return _refine_locked(state, job, repo_id, report)
    finally:
        locks.release(state.sessions, repo_id, job.id)


def _refine_locked(state: ServiceState, job: Job, repo_id: int, report: Reporter) -> str:
    # torch and tree-sitter: loaded on the first refine job
    from hypernet.adapter import read_adapter, scaling, write_adapter
    from hypernet.context import extract_repo
    from hypernet.metrics import known_identifiers, repo_identifiers
    from hypernet.refine import refine_adapter

    settings = state.settings
    with state.sessions() as s:
        repo = s.get(Repository, repo_id)
        if repo is None:
            raise JobError("repository was deleted while the job ran")
        if repo.active_version is None:
            raise JobError("the repository has no active adapter to refine yet")
        start = s.scalar(select(AdapterVersion).where(AdapterVersion.repository_id == repo_id,
                                                      AdapterVersion.version == repo.active_version))
        if start is None:
            raise JobError(f"active version {repo.active_version} is missing")
        start_dir = adapter_path(state, start)
        commit = repo.last_commit or start.commit_sha
        start_number, start_sha, hypernet_version = start.version, start.artifact_sha256, start.hypernet_version
    checkout = checkout_dir(state, repo_id)
    if not (checkout / ".git").exists():
        raise JobError("the repository's checkout is missing; regenerate it first")

    report(0.03, f"reading the context of commit {commit[:12]}")
    ctx = load_context(state, repo_id, commit) or extract_repo(checkout, max_file_bytes=settings.max_file_bytes)
    seen, heldout = evaluation.prepare(state, repo_id, ctx, checkout, commit)
    texts = evaluation.read_texts(checkout, set(seen.files), settings.max_file_bytes)
    if not any(t.strip() for t in texts.values()):
        raise JobError("no context files to train on")
    config, tensors = read_adapter(start_dir)
    cfg = refine_config(settings, job.params)

    report(0.05, "loading the base model")
    scoring = evaluation.scoring_model(state)
    t0 = time.perf_counter()
    with scoring.lock:
        model, tokenizer = scoring.get(state)
        result = refine_adapter(model, tokenizer, tensors, scaling(config), texts, repo_identifiers(seen), cfg,
                                progress=lambda f, m: report(0.08 + 0.57 * f, f"refining v{start_number}: {m}"),
                                known=known_identifiers(seen))
    if result.metrics.get("best_step") == 0:
        return (f"refinement of v{start_number} did not improve the validation loss in {result.steps} steps; "
                "no new version")
    files = write_adapter(result.tensors, settings.artifact_dir, base_model=config["base_model_name_or_path"],
                          lora_alpha=float(config["lora_alpha"]),
                          extra={"hypernet_version": hypernet_version, "context_digest": seen.digest,
                                 "refined_from": start_sha})
    metrics = {
        "refine": {**result.metrics, "from_version": start_number, "steps": result.steps,
                   "seconds": round(result.seconds, 2), "stopped_early": result.stopped_early,
                   "config": result.config, "wall_s": round(time.perf_counter() - t0, 2)},
        "context": {"files": len(seen.files), "trained_files": len(texts), "heldout_files": len(heldout.paths)},
    }
    version = record_version(state, repo_id, kind="refined", commit_sha=commit, hypernet_version=hypernet_version,
                             context_digest=seen.digest, sha=files.sha256, path=files.path, metrics=metrics,
                             heldout=heldout, report=report)
    reason = (version.metrics or {}).get("promotion", {}).get("reason", "")
    state_word = "active" if version.is_active else "not promoted"
    return f"refined version {version.version} (from v{start_number}) ready, {state_word}: {reason}"
