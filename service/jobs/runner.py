"""Runs one job by id: marks it running, dispatches by kind, records success or a readable failure."""

from __future__ import annotations

import errno
import logging
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from service import locks
from service.db.models import Job, Repository, utcnow
from service.jobs import ingest, refine
from service.jobs.base import JobError, JobTimeLimit, Reporter
from service.metrics import JOB_DURATION, JOBS_RUNNING
from service.netguard import HostBusy

if TYPE_CHECKING:
    from service.settings import Settings
    from service.state import ServiceState

log = logging.getLogger(__name__)


def _reporter(state: ServiceState, job_id: str, repo_id: int | None) -> Reporter:
    deadline = time.monotonic() + state.settings.job_timeout_s

    def report(progress: float, message: str) -> None:
        if time.monotonic() > deadline:
            raise JobTimeLimit(f"job ran past its time limit of {state.settings.job_timeout_s} s")
        with state.sessions.begin() as s:
            job = s.get(Job, job_id)
            if job is not None:
                job.progress = max(0.0, min(1.0, progress))
                job.message = message
                job.started_at = job.started_at or utcnow()
        if repo_id is not None and progress > 0.01:
            # Progress is the heartbeat: a live job keeps its repository lock from expiring.
            locks.try_acquire(state.sessions, repo_id, job_id, ttl_s=state.settings.job_lock_ttl_s)
        log.info("job %s: %.0f%% %s", job_id, progress * 100, message)

    return report


def public_message(message: str, settings: Settings) -> str:
    """A job error as clients may see it: the service's own folders (data, workspaces, artifacts, models, the
    installation) replaced by a placeholder. Job errors are written for users, this is the net under them."""
    roots = {str(settings.data_dir), str(settings.workspace_dir), str(settings.artifact_dir),
             str(settings.model_cache), sys.prefix, sys.base_prefix, str(Path(__file__).resolve().parents[2])}
    for root in sorted((r for r in roots if r and r != "/"), key=len, reverse=True):
        message = message.replace(root, "<server>")
    return message


def _heartbeat(state: ServiceState, job_id: str, repo_id: int | None) -> threading.Event:
    """Every job_heartbeat_s until the returned event is set: stamp the job's heartbeat_at and keep its repository
    lock from expiring. A job whose heartbeat is stale has lost its process (`reap_stale_jobs`), so a worker killed
    mid-job is noticed within seconds, not after the lock TTL (issue 21 Medium 8)."""
    stop = threading.Event()
    # at least three beats per lock TTL, so a live job's lock never lapses between two
    period = min(state.settings.job_heartbeat_s, state.settings.job_lock_ttl_s / 3)

    def beat() -> None:
        while not stop.wait(period):
            try:
                with state.sessions.begin() as s:
                    job = s.get(Job, job_id)
                    if job is not None:
                        job.heartbeat_at = utcnow()
                if repo_id is not None:
                    locks.renew(state.sessions, repo_id, job_id, ttl_s=state.settings.job_lock_ttl_s)
            except Exception as exc:  # noqa: BLE001 - a missed beat (database busy) must never fail the job
                log.warning("job %s: heartbeat failed: %s", job_id, exc)

    threading.Thread(target=beat, name=f"heartbeat-{job_id[:8]}", daemon=True).start()
    return stop


def run_job(state: ServiceState, job_id: str) -> str:
    """Run the job `job_id` to completion and return its final status."""
    # looked up per call (module attributes), so a test or a benchmark can wrap a job body
    handlers: dict[str, Callable[[ServiceState, Job, Reporter], str]] = {
        "ingest": ingest.run_ingest,
        "regenerate": ingest.run_ingest,
        "refine": refine.run_refine,
    }
    with state.sessions.begin() as s:
        job = s.get(Job, job_id)
        if job is None or job.status in ("succeeded", "failed"):
            return job.status if job else "missing"
        job.status, job.started_at, job.error = "running", utcnow(), None
        job.heartbeat_at = job.started_at
        job.attempts += 1
        s.flush()
        s.expunge(job)
    t0 = time.perf_counter()
    JOBS_RUNNING.inc()
    beating = _heartbeat(state, job_id, job.repository_id)
    status, error, message = "succeeded", None, None
    try:
        report = _reporter(state, job_id, job.repository_id)
        if job.kind in ("ingest", "regenerate"):  # takes the compute lock itself, after the clone
            message = handlers[job.kind](state, job, report)
        else:
            with state.compute_lock:
                message = handlers[job.kind](state, job, report)
    except HostBusy as exc:  # the host already has its clones in flight: back to the queue, no worker held
        status = "deferred"
        with state.sessions.begin() as s:
            job_row = s.get(Job, job_id)
            if job_row is not None:
                job_row.status, job_row.message = "queued", f"waiting: {exc}"
                job_row.attempts = max(0, job_row.attempts - 1)
    except JobError as exc:
        status, error = "failed", public_message(str(exc), state.settings)
    except Exception as exc:  # noqa: BLE001 - a job must end with a readable error, whatever broke
        # The client sees the kind of failure and an id; the message and traceback (server paths, library
        # versions) go to the server log under that id (issue 21 Low 13).
        error_id = uuid.uuid4().hex[:12]
        status, error = "failed", (f"internal error ({type(exc).__name__}, error id {error_id}); "
                                   "the server log has the details")
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # the operator's to fix: say so, no path
            error = (f"no space left on the server's disk (error id {error_id}): nothing was stored; free space "
                     "and retry")
        log.error("job %s crashed (error id %s):\n%s", job_id, error_id, traceback.format_exc())
    finally:
        beating.set()
        JOBS_RUNNING.dec()
    if status == "deferred":
        return status
    with state.sessions.begin() as s:
        job_row = s.get(Job, job_id)
        if job_row is not None:
            job_row.status, job_row.error, job_row.finished_at = status, error, utcnow()
            if status == "succeeded":
                job_row.progress, job_row.message = 1.0, message or "done"
            if status == "failed" and job_row.repository_id is not None:
                repo = s.get(Repository, job_row.repository_id)
                if repo is not None:
                    # A failed regenerate keeps serving the last good version.
                    repo.status = "ready" if repo.active_version is not None else "failed"
                    repo.status_message = error
    JOB_DURATION.labels(job.kind, status).observe(time.perf_counter() - t0)
    return status
