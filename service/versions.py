"""Adapter version management: pin, unpin, roll back, delete, retention, secret rotation."""

from __future__ import annotations

import secrets
import shutil

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.models import AdapterVersion, Repository
from service.names import engine_names
from service.repos import Conflict, NotFound
from service.state import ServiceState
from service.store import activate


def get_version(repo: Repository, number: int) -> AdapterVersion:
    """A version of `repo` by number; raises NotFound."""
    for v in repo.versions:
        if v.version == number:
            return v
    raise NotFound(f"repository {repo.name!r} has no version {number}")


def pin(state: ServiceState, session: Session, repo: Repository, number: int) -> Repository:
    """Serve `number` and keep serving it until unpinned, whatever pushes arrive."""
    target = get_version(repo, number)
    if target.status != "ready":
        raise Conflict(f"version {number} is {target.status}, not ready")
    for v in repo.versions:
        v.is_pinned = v.version == number
    repo.pinned_version = number
    activate(state, session, repo, number)
    session.commit()
    return repo


def unpin(state: ServiceState, session: Session, repo: Repository) -> Repository:
    """Drop the pin; the newest ready version that passed the promotion gate becomes active."""
    for v in repo.versions:
        v.is_pinned = False
    repo.pinned_version = None
    ready = [v.version for v in repo.versions if v.status == "ready"]
    # The newest version the promotion gate let through (versions from before the gate count as passed).
    passed = [v.version for v in repo.versions if v.status == "ready"
              and (v.metrics or {}).get("promotion", {}).get("gate_passed", True)]
    activate(state, session, repo, max(passed or ready) if ready else None)
    session.commit()
    return repo


def rollback(state: ServiceState, session: Session, repo: Repository, number: int | None = None) -> Repository:
    """Activate an earlier version (default: the one before the active one); refused while pinned."""
    if repo.pinned_version is not None:
        raise Conflict(f"version {repo.pinned_version} is pinned; unpin or pin another version instead")
    if number is None:
        earlier = [v.version for v in repo.versions if v.status == "ready" and v.version < (repo.active_version or 0)]
        if not earlier:
            raise Conflict("there is no earlier ready version to roll back to")
        number = max(earlier)
    target = get_version(repo, number)
    if target.status != "ready":
        raise Conflict(f"version {number} is {target.status}, not ready")
    activate(state, session, repo, number)
    session.commit()
    return repo


def _drop_version(state: ServiceState, session: Session, version: AdapterVersion) -> None:
    sha, path = version.artifact_sha256, version.artifact_path
    session.delete(version)
    session.flush()
    still_used = session.scalar(select(func.count()).select_from(AdapterVersion)
                                .where(AdapterVersion.artifact_sha256 == sha))
    if not still_used:
        state.cache.delete(sha)
        shutil.rmtree(path, ignore_errors=True)


def delete_version(state: ServiceState, session: Session, repo: Repository, number: int) -> None:
    """Delete one version; never the active or the pinned one."""
    target = get_version(repo, number)
    if number in (repo.active_version, repo.pinned_version):
        raise Conflict(f"version {number} is active or pinned and cannot be deleted")
    names = engine_names(repo, [target])
    repo.versions.remove(target)
    _drop_version(state, session, target)
    session.commit()
    state.retire(names)


def prune(state: ServiceState, session: Session, repo: Repository, keep: int) -> list[int]:
    """Retention: keep the newest `keep` versions plus the active and pinned ones; return deleted numbers."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    newest = sorted((v.version for v in repo.versions), reverse=True)[:keep]
    protected = set(newest) | {repo.active_version, repo.pinned_version}
    doomed = [v for v in list(repo.versions) if v.version not in protected]
    names = engine_names(repo, doomed)
    for v in doomed:
        repo.versions.remove(v)
        _drop_version(state, session, v)
    session.commit()
    state.retire(names)
    return sorted(v.version for v in doomed)


def rotate_secret(session: Session, repo: Repository) -> str:
    """A new webhook secret (returned once); the old one stops working at once."""
    repo.webhook_secret = secrets.token_hex(24)
    session.commit()
    return repo.webhook_secret
