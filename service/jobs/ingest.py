"""Ingest and regenerate jobs: clone or fetch -> extract (incrementally when possible) -> adapter version."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from service import evaluation, locks
from service.adapters import build_adapter_version
from service.db.models import AdapterVersion, Job, Repository
from service.gitops import clone, fetch_and_checkout
from service.jobs.base import JobError, Reporter
from service.jobs.refine import queue_refine_after
from service.jobs.workspace import checkout_dir, load_context, save_context, workspace
from service.repourl import CloneError, RepoURLError, normalize_repo_url
from service.vocabulary import save_vocabulary

if TYPE_CHECKING:
    from service.state import ServiceState

log = logging.getLogger(__name__)


def _set_repo(state: ServiceState, repo_id: int, **fields: object) -> Repository:
    with state.sessions.begin() as s:
        repo = s.get(Repository, repo_id)
        if repo is None:
            raise JobError("repository was deleted while the job ran")
        for k, v in fields.items():
            setattr(repo, k, v)
        s.flush()
        s.expunge(repo)
        return repo


def run_ingest(state: ServiceState, job: Job, report: Reporter) -> str:
    """Bring the checkout to the branch head, extract its context and build the adapter version."""
    repo_id = locks.lock_for_job(state, job, report)
    before = _newest_version(state, repo_id)
    try:
        message = _ingest_locked(state, job, repo_id, report)
    finally:
        locks.release(state.sessions, repo_id, job.id)
    if state.settings.refine_after_ingest and _newest_version(state, repo_id) != before:
        message += queue_refine_after(state, repo_id)
    return message


def _newest_version(state: ServiceState, repo_id: int) -> int | None:
    with state.sessions() as s:
        return s.scalar(select(func.max(AdapterVersion.version)).where(AdapterVersion.repository_id == repo_id))


def _remote_limits(settings: Any) -> dict[str, Any]:
    """Where git may connect and how long a silent remote may hold the job (service.netguard); the per-host
    limit applies to the in-process queue (an RQ worker runs one job at a time)."""
    return dict(allowed_hosts=settings.allowed_git_hosts, stall_s=settings.clone_stall_timeout_s,
                host_limit=settings.max_clones_per_host if settings.queue == "inprocess" else 0)


def _ingest_locked(state: ServiceState, job: Job, repo_id: int, report: Reporter) -> str:
    settings = state.settings
    repo = _set_repo(state, repo_id, status="cloning" if repo_id and job.kind == "ingest" else "fetching")
    checkout = checkout_dir(state, repo_id)
    try:
        url = normalize_repo_url(repo.url, allow_local=settings.allow_local_repos)
        previous_ctx = None
        if (checkout / ".git").exists() and repo.last_commit:
            report(0.05, f"fetching {repo.branch or 'default branch'}")
            old, sha = fetch_and_checkout(url, checkout, branch=repo.branch or None,
                                          timeout_s=settings.clone_timeout_s, max_bytes=settings.max_repo_bytes,
                                          **_remote_limits(settings))
            previous_ctx = load_context(state, repo_id, old)
        else:
            report(0.05, f"cloning {repo.url}")
            old, sha = None, clone(url, checkout, branch=repo.branch or None,
                                   timeout_s=settings.clone_timeout_s, max_bytes=settings.max_repo_bytes,
                                   **_remote_limits(settings))
    except (CloneError, RepoURLError) as exc:
        raise JobError(str(exc)) from exc
    with state.compute_lock:  # the network part ran in parallel with other jobs; the models are shared
        return _build_locked(state, job, repo_id, report, repo, checkout, old, sha, previous_ctx)


def _build_locked(state: ServiceState, job: Job, repo_id: int, report: Reporter, repo: Repository,
                  checkout: Path, old: str | None, sha: str, previous_ctx: Any) -> str:
    from hypernet.context import changes_between, extract_repo, update_context  # tree-sitter: loaded on first job

    settings = state.settings
    _set_repo(state, repo_id, last_commit=sha, status="extracting")
    report(0.3, f"at commit {sha[:12]}")

    full = bool(job.params.get("full")) or previous_ctx is None or old is None
    if full:
        report(0.35, "extracting repository context")
        ctx = extract_repo(checkout, max_file_bytes=settings.max_file_bytes)
    else:
        assert old is not None  # full is set when there is no previous commit
        changes = changes_between(checkout, old, sha)
        report(0.35, f"re-extracting {len(changes)} changed files")
        ctx = update_context(previous_ctx, checkout, changes)
    save_context(state, repo_id, sha, ctx)
    save_vocabulary(state, repo_id, ctx)  # the names repository-vocabulary decoding keeps completions on
    # The held-out slice is split off once per repository; the hypernetwork only ever sees the rest.
    seen, heldout = evaluation.prepare(state, repo_id, ctx, checkout, sha)
    evolve = None
    if repo.mode == "evolving":
        previous_seen = None
        if previous_ctx is not None and not full:
            previous_seen = evaluation.context_slice(previous_ctx, evaluation.heldout_paths(
                evaluation.ensure_split(state, repo_id, ctx, sha), previous_ctx))
        evolve = _evolver(state, repo_id, old if not full else None, sha, previous_seen, seen)
    version = build_adapter_version(state, repo_id, seen, sha, report, evolve=evolve, heldout=heldout)
    if version.is_active:
        return f"adapter version {version.version} ready and active (commit {sha[:12]})"
    reason = (version.metrics or {}).get("promotion", {}).get("reason", "")
    return f"adapter version {version.version} ready, not promoted: {reason} (commit {sha[:12]})"


def _evolver(state: ServiceState, repo_id: int, old: str | None, new: str, previous_ctx: Any, ctx: Any):
    """The evolving-mode step: fold this commit's diff into the saved state (or start one), then save it."""
    from hypernet.evolve import EvolvingState, diff_api_text, fold, initial_state

    path = workspace(state, repo_id) / "evolving.json"

    def step(generator: Any) -> EvolvingState:
        prev = None
        try:
            prev = EvolvingState.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError):
            pass
        if prev is not None and old is not None and prev.commit == old and previous_ctx is not None:
            added, removed = diff_api_text(previous_ctx, ctx)
            current = fold(prev, generator, added, removed, new)
        elif prev is not None and prev.commit == new:
            current = prev  # regenerating the same commit: the state is already there
        else:
            current = initial_state(ctx, generator, new)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(current.to_json()))
        os.replace(tmp, path)
        return current

    return step
