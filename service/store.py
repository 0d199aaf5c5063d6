"""The adapter store: versions of a repository's adapter, from recording to serving.

- `add_version` records a stored artifact as a new version and activates it when the gate said so.
- `find_reusable` / `same_as_latest`: same context + same hypernetwork = the same adapter, never recomputed.
- `activate` is the one way a version becomes active: the rows, then (after the commit) the cache's active pointer
  and an `Activation` announced to the subscribers (the engine's hot-loader, `service.engines.loader`).
- `adapter_name` formats the public name `repo@vN`; `engine_name` the name an engine loads it under,
  `repo@vN+<digest>`, unique to the artifact's bytes (both in `service.names`); `resolve_model` maps a
  request's `model` to a version; `adapter_path` finds (or restores from the cache) a version's artifact folder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from hypernet.adapter import pack_adapter, unpack_adapter
from service.db.models import AdapterVersion, Repository
from service.jobs.base import JobError
from service.names import adapter_name, engine_name
from service.repos import find_repo, latest_job
from service.state import Activation, ServiceState

BASE_MODEL_ID = "base"
MAX_DB_INT = 2**31 - 1  # ids and version numbers are 32-bit integers in the DB
_VERSION_RE = re.compile(r"^(?P<ref>.+?)@v(?P<n>\d+)$")


class ModelNotFound(Exception):
    """No repository or version by that name (HTTP 404)."""


class AdapterNotReady(Exception):
    """The repository exists but has no servable adapter yet (HTTP 409)."""

    def __init__(self, message: str, job: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.job = job


@dataclass(frozen=True)
class Resolved:
    """What a request will run on: an adapter (None = base model) and the name to report."""

    adapter_id: str | None  # the engine-side name (`engine_name`), unique to the artifact
    path: str | None
    model_name: str
    repository_id: int | None = None


def adapter_path(state: ServiceState, version: AdapterVersion) -> Path:
    """The artifact folder of a version, restored from the cache if the folder is gone."""
    path = Path(version.artifact_path)
    if (path / "adapter_config.json").exists():
        return path
    data = state.cache.get(version.artifact_sha256)
    if data is None:
        raise FileNotFoundError(f"adapter artifact {version.artifact_sha256[:12]} is missing")
    return unpack_adapter(data, path)


def resolve_model(state: ServiceState, session: Session, model: str) -> Resolved:
    """Map an OpenAI `model` field (`base`, `<repo>`, `<id>`, `<repo>@vN`) to an adapter version; raise
    ModelNotFound or AdapterNotReady."""
    if model in (BASE_MODEL_ID, "", None):
        return Resolved(None, None, BASE_MODEL_ID)
    ref, number = model, None
    m = _VERSION_RE.match(model)
    if m and find_repo(session, model) is None:
        ref, number = m.group("ref"), int(m.group("n")[:12])
        if len(m.group("n")) > 9 or number > MAX_DB_INT:  # no such version; never an integer the DB cannot hold
            raise ModelNotFound(f"The model '{model[:200]}' does not exist: no such version")
    repo = find_repo(session, ref)
    if repo is None:
        raise ModelNotFound(f"The model '{model}' does not exist: no repository named or numbered '{ref}'")
    if number is None:
        number = repo.pinned_version or repo.active_version
        if number is None:
            job = latest_job(session, repo.id)
            status = f"job {job.id} is {job.status} ({job.progress:.0%}: {job.message or job.error or ''})" if job else "no job"
            raise AdapterNotReady(f"repository '{repo.name}' has no adapter yet; {status}",
                                  {"id": job.id, "status": job.status, "progress": job.progress,
                                   "message": job.message, "error": job.error} if job else None)
    version = session.scalar(select(AdapterVersion).where(
        AdapterVersion.repository_id == repo.id, AdapterVersion.version == number))
    if version is None:
        raise ModelNotFound(f"The model '{model}' does not exist: repository '{repo.name}' has no version {number}")
    if version.status != "ready":
        raise AdapterNotReady(f"version {number} of '{repo.name}' is {version.status}", None)
    return Resolved(engine_name(repo, number, version.artifact_sha256), str(adapter_path(state, version)),
                    adapter_name(repo, number), repo.id)


def activate(state: ServiceState, session: Session, repo: Repository, number: int | None) -> None:
    """Make version `number` (None: none) the active one of `repo` in `session`. When the session commits, the
    cache's active pointer follows and, if the active version changed, an `Activation` is announced."""
    previous = repo.active_version
    path = name = previous_name = None
    for v in repo.versions:
        v.is_active = v.version == number
        if v.version == number:
            path, name = v.artifact_path, engine_name(repo, number, v.artifact_sha256)
        if previous is not None and v.version == previous:
            previous_name = engine_name(repo, previous, v.artifact_sha256)
    repo.active_version = number
    repo_id = repo.id
    announce = None
    if number is not None and number != previous and name is not None:
        announce = Activation(repo_id, name, path, previous_name)

    def after_commit(_session: Session) -> None:
        state.cache.set_active(repo_id, number)
        if announce is not None:
            state.announce(announce)

    event.listen(session, "after_commit", after_commit, once=True)


def find_reusable(state: ServiceState, context_digest: str, hypernet_version: str) -> AdapterVersion | None:
    """A stored, generated adapter of any repository for the same context and hypernetwork, whose files exist."""
    with state.sessions() as s:
        existing = s.scalar(select(AdapterVersion).where(
            AdapterVersion.context_digest == context_digest, AdapterVersion.hypernet_version == hypernet_version,
            AdapterVersion.kind != "refined", AdapterVersion.status == "ready")
            .order_by(AdapterVersion.id.desc()).limit(1))
    if existing is not None and (Path(existing.artifact_path) / "adapter_config.json").exists():
        return existing
    return None


def same_as_latest(state: ServiceState, repo_id: int, *, context_digest: str, hypernet_version: str, sha: str,
                   commit_sha: str) -> AdapterVersion | None:
    """If the repository's newest generated version already is this adapter, move it to `commit_sha` and return it
    (nothing changed for the model: no twin version); else None."""
    with state.sessions() as s:
        last = s.scalar(select(AdapterVersion).where(AdapterVersion.repository_id == repo_id,
                                                     AdapterVersion.kind != "refined")
                        .order_by(AdapterVersion.version.desc()).limit(1))
        if last is None or last.context_digest != context_digest or last.hypernet_version != hypernet_version \
                or last.artifact_sha256 != sha:
            return None
        last_id = last.id
    with state.sessions.begin() as s2:
        row = s2.get(AdapterVersion, last_id)
        repo = s2.get(Repository, repo_id)
        if row is None or repo is None:
            raise JobError("repository was deleted while the job ran")
        row.commit_sha = commit_sha
        repo.status, repo.status_message = "ready", None
        s2.flush()
        s2.expunge(row)
        return row


def add_version(
    state: ServiceState, repo_id: int, *, kind: str, commit_sha: str, hypernet_version: str, context_digest: str,
    sha: str, path: Path, metrics: dict[str, Any], decision: dict[str, Any],
) -> AdapterVersion:
    """Record a stored artifact as the repository's next version. It becomes active when `decision` (the promotion
    gate's) promoted it, or when the repository has no active version yet, and no version is pinned; the final
    decision is stored in the version's metrics (`promotion`)."""
    state.cache.put(sha, pack_adapter(path))
    with state.sessions.begin() as s:
        repo = s.get(Repository, repo_id)
        if repo is None:
            raise JobError("repository was deleted while the job ran")
        number = (s.scalar(select(func.max(AdapterVersion.version)).where(
            AdapterVersion.repository_id == repo_id)) or 0) + 1
        promote = decision["promoted"] or repo.active_version is None
        if repo.pinned_version is not None and promote:
            decision = {**decision, "promoted": False, "gate_passed": decision["promoted"],
                        "reason": f"v{repo.pinned_version} is pinned (gate: {decision['reason']})"}
            promote = False
        else:
            decision = {**decision, "gate_passed": bool(decision["promoted"])}
        version = AdapterVersion(
            repository_id=repo_id, version=number, commit_sha=commit_sha, hypernet_version=hypernet_version,
            context_digest=context_digest, artifact_sha256=sha, artifact_path=str(path), status="ready", kind=kind,
            metrics=json.loads(json.dumps({**metrics, "promotion": decision}, default=str)),
        )
        s.add(version)
        s.flush()
        if promote:
            activate(state, s, repo, number)
        else:
            state_pointer = repo.active_version
            event.listen(s, "after_commit", lambda _s: state.cache.set_active(repo_id, state_pointer), once=True)
        repo.status, repo.status_message = "ready", None
        s.flush()
        s.expunge(version)
    return version
