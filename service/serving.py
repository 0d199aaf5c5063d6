"""Which engine serves, and which adapter a request's `model` names (`<repo>`, `<id>`, `<repo>@vN`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service import repos as registry
from service.adapters import adapter_path
from service.db.models import AdapterVersion, Repository
from service.repos import latest_job
from service.settings import Settings
from service.state import ServiceState

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

    adapter_id: str | None
    path: str | None
    model_name: str
    repository_id: int | None = None


def base_model_dir(settings: Settings) -> Path:
    """The base model folder the engine loads (prepared bundled model by default)."""
    if settings.base_model_path:
        return Path(settings.base_model_path)
    from hypernet.basemodel import prepare_bundled

    return prepare_bundled(settings.model_cache)


def make_engine(settings: Settings) -> Any:
    """The configured engine (not started), or None for `engine=none`."""
    if settings.engine == "none":
        return None
    model_dir = base_model_dir(settings)
    if settings.engine == "local":
        from service.engines.local import LocalEngine

        return LocalEngine(model_path=str(model_dir), slots=settings.engine_slots)
    from service.engines.vllm import VllmEngine

    return VllmEngine(settings.vllm_url, max_loras=settings.engine_slots, base_model_path=str(model_dir),
                      zero_adapter_path=str(Path(settings.artifact_dir) / "zero-adapter"))


def adapter_name(repo: Repository, version: int) -> str:
    """The immutable engine-side name of one adapter version."""
    return f"{repo.name}@v{version}"


def resolve_model(state: ServiceState, session: Session, model: str) -> Resolved:
    """Map an OpenAI `model` field to an adapter version; raise ModelNotFound or AdapterNotReady."""
    if model in (BASE_MODEL_ID, "", None):
        return Resolved(None, None, BASE_MODEL_ID)
    ref, number = model, None
    m = _VERSION_RE.match(model)
    if m and registry.find_repo(session, model) is None:
        ref, number = m.group("ref"), int(m.group("n")[:12])
        if len(m.group("n")) > 9 or number > MAX_DB_INT:  # no such version; never an integer the DB cannot hold
            raise ModelNotFound(f"The model '{model[:200]}' does not exist: no such version")
    repo = registry.find_repo(session, ref)
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
    name = adapter_name(repo, number)
    return Resolved(name, str(adapter_path(state, version)), name, repo.id)
