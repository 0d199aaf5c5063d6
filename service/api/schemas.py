"""Request and response models of the REST API (the OpenAI protocol lives in service/api/openai)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _as_utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands timestamps back naive (they were stored as UTC); the schema promises RFC 3339 date-times.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


UtcDateTime = Annotated[dt.datetime, AfterValidator(_as_utc)]


class RepoCreate(BaseModel):
    """Register a repository: https/ssh URL (or a local path when the service allows it)."""

    url: str = Field(..., min_length=1, max_length=2000, examples=["https://github.com/psf/requests.git"])
    branch: str | None = Field(None, max_length=255, pattern=r"^[A-Za-z0-9._/-]+$")
    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    mode: Literal["static", "evolving"] = "static"


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    repository_id: int | None
    status: str
    progress: float
    message: str | None
    error: str | None
    attempts: int
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None


class RepoOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    url: str
    branch: str | None
    status: str
    status_message: str | None
    last_commit: str | None
    active_version: int | None
    pinned_version: int | None
    mode: str
    created_at: UtcDateTime
    updated_at: UtcDateTime
    latest_job: JobOut | None = None


class RepoCreated(BaseModel):
    repository: RepoOut
    job: JobOut
    webhook_secret: str = Field(..., description="Shown once: sign webhooks with it.")


class VersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    commit_sha: str
    hypernet_version: str
    context_digest: str
    artifact_sha256: str
    status: str
    kind: str = Field("generated", description="generated | evolving | refined")
    metrics: dict[str, Any] = Field(..., description=(
        "`eval`: scores on the held-out files ({base, candidate, active}: loss, ident_loss, ident_em, "
        "invented_rate, ...; heldout_files, seconds, budget), or {skipped: reason} such as "
        "'too small to measure: N files'; `promotion`: {promoted, gate_passed, reason, metric, tolerance}; "
        "`context`; `refine` for refined versions."))
    is_active: bool
    is_pinned: bool
    created_at: UtcDateTime


class HealthOut(BaseModel):
    """The overall status for everyone; the parts only for clients that may use the API (loopback without keys,
    or a valid API key): they name adapters and hosts (issue 21 Low 13)."""

    status: Literal["ok", "degraded", "down"]
    database: dict[str, Any] | None = None
    redis: dict[str, Any] | None = None
    engine: dict[str, Any] | None = None
    queue: dict[str, Any] | None = None
    adapters: dict[str, Any] | None = None  # {"on": false, "reason": ...} when adapters are switched off


class RollbackIn(BaseModel):
    version: int | None = Field(None, ge=1, description="Target version; default: the one before the active one.")


class PruneIn(BaseModel):
    keep: int = Field(..., ge=1, description="How many of the newest versions to keep (active/pinned always kept).")


class PruneOut(BaseModel):
    deleted: list[int]


class SecretOut(BaseModel):
    webhook_secret: str


class RefineIn(BaseModel):
    """Optional overrides of the refinement budget (defaults: the CODE2LORA_REFINE_* settings)."""

    steps: int | None = Field(None, ge=1, le=10_000, description="Optimizer steps.")
    max_seconds: float | None = Field(None, gt=0, le=24 * 3600, description="Wall-time cap of the training.")
    lr: float | None = Field(None, gt=0, le=1.0, description="Adam learning rate on A and B.")
    method: Literal["supervised", "rl"] | None = Field(None, description="Refinement method (default: "
                                                       "CODE2LORA_REFINE_METHOD); docs/EVAL.md compares them.")


class RepoUpdate(BaseModel):
    """Fields of a repository that can change after registration."""

    mode: Literal["static", "evolving"] | None = None
