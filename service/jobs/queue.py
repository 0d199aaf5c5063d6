"""Job queues: an in-process thread pool (embedded default) or RQ on Redis (`code2lora worker`)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from sqlalchemy import select

from service.db.models import Job, RepoLock, utcnow

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


def reap_stale_jobs(state: ServiceState, max_attempts: int = 3, orphan_after_s: float = 60.0) -> list[str]:
    """Jobs left `running` by a dead worker (older than the lock TTL) go back to the queue, or fail after
    `max_attempts`; jobs `queued` in the DB that the queue lost are queued again. Return the re-queued ids."""
    now = utcnow()
    cutoff = now - dt.timedelta(seconds=state.settings.job_lock_ttl_s)
    requeued: list[str] = []
    with state.sessions.begin() as s:
        # A live job renews its repository lock on every progress report; a dead one's lock expires.
        live = select(RepoLock.owner).where(RepoLock.expires_at >= now)
        stale = s.scalars(select(Job).where(Job.status == "running", Job.started_at < cutoff,
                                            Job.id.not_in(live))).all()
        for job in stale:
            if job.attempts >= max_attempts:
                job.status, job.finished_at = "failed", utcnow()
                job.error = f"worker died during the job {job.attempts} times; giving up"
            else:
                job.status, job.message = "queued", "re-queued: the previous worker died during the job"
                requeued.append(job.id)
    queue = state.queue
    if queue is None:
        return requeued
    has = getattr(queue, "has", None)  # RQ: whether Redis still knows the job
    if has is not None:
        # Jobs the DB calls queued but RQ no longer has (Redis lost its data): queue them again.
        with state.sessions() as s:
            waiting = s.scalars(select(Job.id).where(
                Job.status == "queued", Job.created_at < now - dt.timedelta(seconds=orphan_after_s))).all()
        requeued += [job_id for job_id in waiting if not has(job_id)]
    for job_id in requeued:
        queue.enqueue(job_id)
    return requeued
