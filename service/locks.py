"""Per-repository write locks in the database, with expiry so a crashed worker cannot hold one forever."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, cast

from sqlalchemy import CursorResult, delete, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Job, RepoLock, utcnow

if TYPE_CHECKING:
    from service.jobs.base import Reporter
    from service.state import ServiceState


def try_acquire(sessions: sessionmaker[Session], repo_id: int, owner: str, ttl_s: float) -> bool:
    """Take (or renew) the lock of `repo_id` for `owner`; False if someone else holds a live lock."""
    now = utcnow()
    expires = now + dt.timedelta(seconds=ttl_s)
    with sessions.begin() as s:
        taken = cast(CursorResult, s.execute(  # an UPDATE's result is a CursorResult, which has rowcount
            update(RepoLock)
            .where(RepoLock.repository_id == repo_id, or_(RepoLock.expires_at < now, RepoLock.owner == owner))
            .values(owner=owner, expires_at=expires)
        )).rowcount
    if taken:
        return True
    try:
        with sessions.begin() as s:
            s.add(RepoLock(repository_id=repo_id, owner=owner, expires_at=expires))
        return True
    except IntegrityError:
        return False


def acquire(sessions: sessionmaker[Session], repo_id: int, owner: str, ttl_s: float, wait_s: float,
            poll_s: float = 0.25) -> bool:
    """Wait up to `wait_s` for the lock."""
    deadline = time.monotonic() + wait_s
    while True:
        if try_acquire(sessions, repo_id, owner, ttl_s):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def renew(sessions: sessionmaker[Session], repo_id: int, owner: str, ttl_s: float) -> bool:
    """Push out the expiry of a lock `owner` holds; never takes a lock it does not hold (a heartbeat)."""
    with sessions.begin() as s:
        renewed = cast(CursorResult, s.execute(
            update(RepoLock).where(RepoLock.repository_id == repo_id, RepoLock.owner == owner)
            .values(expires_at=utcnow() + dt.timedelta(seconds=ttl_s))
        )).rowcount
    return bool(renewed)


def release(sessions: sessionmaker[Session], repo_id: int, owner: str) -> None:
    """Drop the lock if `owner` still holds it."""
    with sessions.begin() as s:
        s.execute(delete(RepoLock).where(RepoLock.repository_id == repo_id, RepoLock.owner == owner))


def lock_for_job(state: ServiceState, job: Job, report: Reporter) -> int:
    """Wait for the lock of the job's repository, then mark the job started (waiting is not part of the work);
    returns the repository id. The caller releases the lock with `release`."""
    from service.jobs.base import JobError

    if job.repository_id is None:
        raise JobError("job has no repository")
    repo_id, settings = job.repository_id, state.settings
    report(0.01, "waiting for the repository lock")
    if not acquire(state.sessions, repo_id, job.id, ttl_s=settings.job_lock_ttl_s, wait_s=settings.job_lock_ttl_s):
        raise JobError("repository is busy: another job held its lock for too long")
    with state.sessions.begin() as s:
        row = s.get(Job, job.id)
        if row is not None:
            row.started_at = utcnow()
    return repo_id
