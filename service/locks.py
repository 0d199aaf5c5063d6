"""Per-repository write locks in the database, with expiry so a crashed worker cannot hold one forever."""

from __future__ import annotations

import datetime as dt
import time
from typing import cast

from sqlalchemy import CursorResult, delete, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import RepoLock, utcnow


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


def release(sessions: sessionmaker[Session], repo_id: int, owner: str) -> None:
    """Drop the lock if `owner` still holds it."""
    with sessions.begin() as s:
        s.execute(delete(RepoLock).where(RepoLock.repository_id == repo_id, RepoLock.owner == owner))
