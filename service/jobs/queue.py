"""Job queues: an in-process thread pool (embedded default) or RQ on Redis (`code2lora worker`)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from sqlalchemy import and_, delete, or_, select

from service.db.models import Job, RepoLock, Repository, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from service.state import ServiceState

log = logging.getLogger(__name__)
RQ_QUEUE_NAME = "code2lora"


class InProcessQueue:
    """Runs jobs on a small thread pool inside the API process; `run(job_id) -> final status` runs one
    (`service.jobs.runner.run_job`, bound by `service.bootstrap`)."""

    retry_after_s = 1.0  # a job whose host is at its clone limit is tried again after this long

    def __init__(self, state: ServiceState, run: Callable[[str], str], workers: int = 1) -> None:
        self._state = state
        self._run = run
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="code2lora-job")
        self._pending = 0
        self._closed = False

    def enqueue(self, job_id: str) -> None:
        self._pending += 1

        def _run() -> None:
            status = None
            try:
                status = self._run(job_id)
            finally:
                self._pending -= 1
            if status == "deferred" and not self._closed:
                # Its host is at its clone limit: queued again shortly, without holding a worker meanwhile.
                timer = threading.Timer(self.retry_after_s, self._retry, (job_id,))
                timer.daemon = True
                timer.start()

        self._pool.submit(_run)

    def _retry(self, job_id: str) -> None:
        if not self._closed:
            try:
                self.enqueue(job_id)
            except RuntimeError:  # the pool shut down meanwhile: the job stays queued and resumes on start
                pass

    def depth(self) -> int:
        return self._pending

    def resume_unfinished(self) -> int:
        """Re-queue jobs left queued or running by a previous process (nothing acknowledged is lost)."""
        with self._state.sessions() as s:
            ids = list(s.scalars(select(Job.id).where(Job.status.in_(("queued", "running"))).order_by(Job.created_at)))
        for job_id in ids:
            self.enqueue(job_id)
        return len(ids)

    def shutdown(self) -> None:
        # Running jobs finish; jobs not started stay `queued` in the DB and resume on the next start.
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)


class RQQueue:
    """Jobs on Redis through RQ; `code2lora worker` runs them (`service.bootstrap.run_job_in_worker`)."""

    # By name: RQ imports it in the worker process.
    ENTRY_POINT = "service.bootstrap.run_job_in_worker"

    def __init__(self, redis_url: str, job_timeout_s: int) -> None:
        import redis
        import rq

        self._conn = redis.Redis.from_url(redis_url)
        self._queue = rq.Queue(RQ_QUEUE_NAME, connection=self._conn)
        self._timeout = job_timeout_s

    def enqueue(self, job_id: str) -> None:
        self._queue.enqueue(self.ENTRY_POINT, job_id, job_id=f"c2l-{job_id}",
                            job_timeout=self._timeout, result_ttl=3600, failure_ttl=7 * 86400)

    def depth(self) -> int:
        return len(self._queue)

    def requeue(self, job_id: str) -> None:
        """Queue a job again whose worker died: RQ's record of the dead run (in its started registry) goes first,
        so RQ's own clean-up of that run cannot mark the new one failed."""
        from rq.job import Job as RQJob

        try:
            RQJob.fetch(f"c2l-{job_id}", connection=self._conn).delete()
        except Exception:  # noqa: BLE001 - no such RQ job (Redis lost it): nothing to remove
            pass
        self.enqueue(job_id)

    def has(self, job_id: str) -> bool:
        """Whether RQ still knows the job (queued, running, finished or failed)."""
        from rq.job import Job as RQJob

        return RQJob.exists(f"c2l-{job_id}", connection=self._conn)

    def shutdown(self) -> None:
        self._conn.close()


class QueueUnavailable(RuntimeError):
    """The job could not be queued (Redis down); the job row was withdrawn, nothing half-registered stays."""


def enqueue_or_withdraw(state: ServiceState, session: Session, job: Job, *also: object) -> None:
    """Queue a committed job; if the queue refuses it, delete the job (and `also`, e.g. the repository row
    created with it) and raise QueueUnavailable, so the caller can answer 503 and the client can retry."""
    try:
        if state.queue is None:
            raise QueueUnavailable("this process has no job queue")
        state.queue.enqueue(job.id)
    except Exception as exc:  # noqa: BLE001 - any queue failure: undo, then report it as unavailable
        log.error("job queue unavailable, job %s withdrawn: %s", job.id, exc)
        session.delete(job)
        for obj in also:
            session.delete(obj)
        session.commit()
        raise QueueUnavailable(f"job queue unavailable: {exc}") from exc


STALE_HEARTBEATS = 6  # a running job whose heartbeat is this many periods old has lost its process


def reap_stale_jobs(state: ServiceState, max_attempts: int = 3, orphan_after_s: float = 60.0) -> list[str]:
    """Jobs left `running` by a dead worker go back to the queue, or fail after `max_attempts`; jobs `queued` in
    the DB that the queue lost are queued again. Return the re-queued ids.

    A running job's process stamps `heartbeat_at` every job_heartbeat_s (service.jobs.runner): one that is
    STALE_HEARTBEATS periods old is dead (issue 21 Medium 8: a killed RQ worker's job stayed `running` for the
    900 s lock TTL). As before, a job started longer than the lock TTL ago whose lock has expired is dead too
    (rows from before heartbeats)."""
    now = utcnow()
    settings = state.settings
    beat_cutoff = now - dt.timedelta(seconds=settings.job_heartbeat_s * STALE_HEARTBEATS)
    legacy_cutoff = now - dt.timedelta(seconds=settings.job_lock_ttl_s)
    requeued: list[str] = []
    with state.sessions.begin() as s:
        live = select(RepoLock.owner).where(RepoLock.expires_at >= now)
        stale = s.scalars(select(Job).where(Job.status == "running", or_(
            Job.heartbeat_at < beat_cutoff,
            and_(Job.started_at < legacy_cutoff, Job.id.not_in(live))))).all()
        for job in stale:
            if job.attempts >= max_attempts:
                job.status, job.finished_at = "failed", now
                job.error = f"the worker running this job died {job.attempts} times; giving up"
                s.execute(delete(RepoLock).where(RepoLock.owner == job.id))
                repo = s.get(Repository, job.repository_id) if job.repository_id is not None else None
                if repo is not None:
                    repo.status = "ready" if repo.active_version is not None else "failed"
                    repo.status_message = job.error
                log.warning("job %s failed: %s", job.id, job.error)
            else:
                job.status, job.message = "queued", "re-queued: the worker running it died"
                requeued.append(job.id)
                log.warning("job %s re-queued: its worker died (last heartbeat %s)", job.id, job.heartbeat_at)
    queue = state.queue
    if queue is None:
        return requeued
    has = getattr(queue, "has", None)  # RQ: whether Redis still knows the job
    lost: list[str] = []
    if has is not None:
        # Jobs the DB calls queued but RQ no longer has (Redis lost its data): queue them again.
        with state.sessions() as s:
            waiting = s.scalars(select(Job.id).where(
                Job.status == "queued", Job.created_at < now - dt.timedelta(seconds=orphan_after_s))).all()
        lost = [job_id for job_id in waiting if job_id not in requeued and not has(job_id)]
    again = getattr(queue, "requeue", queue.enqueue)
    for job_id in requeued:
        again(job_id)
    for job_id in lost:
        queue.enqueue(job_id)
    return requeued + lost


def reap_periodically(state: ServiceState, stop: threading.Event) -> threading.Thread:
    """A daemon thread that runs `reap_stale_jobs` every other heartbeat period until `stop` is set (RQ workers:
    a worker restarted at once after a crash sees its dead run's heartbeat still fresh, so once is not enough)."""

    def loop() -> None:
        while not stop.wait(max(1.0, state.settings.job_heartbeat_s * 2)):
            try:
                reap_stale_jobs(state)
            except Exception as exc:  # noqa: BLE001 - Redis or the database away for a moment: next round
                log.warning("reaping stale jobs failed: %s", exc)

    thread = threading.Thread(target=loop, name="reap-stale-jobs", daemon=True)
    thread.start()
    return thread
