"""SQLAlchemy 2 models: repositories, context snapshots, adapter versions and jobs."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    """Timezone-aware now, stored the same way on SQLite and PostgreSQL."""
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    """Random hex id for jobs."""
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    """Declarative base with a JSON type that works on SQLite and PostgreSQL."""

    type_annotation_map = {dict[str, Any]: JSON}


class Repository(Base):
    __tablename__ = "repositories"
    __table_args__ = (UniqueConstraint("url", "branch", name="uq_repositories_url_branch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, index=True)
    url: Mapped[str] = mapped_column(String(2000))
    # "" means the remote's default branch; NULL would defeat the url+branch unique constraint.
    branch: Mapped[str] = mapped_column(String(255), default="")
    # queued -> cloning -> extracting -> generating -> ready | failed
    status: Mapped[str] = mapped_column(String(32), default="queued")
    status_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    active_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pinned_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    mode: Mapped[str] = mapped_column(String(16), default="static")
    webhook_secret: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The held-out evaluation split, made once at the first ingest (see service/evaluation.py); None before.
    eval_split: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    versions: Mapped[list[AdapterVersion]] = relationship(
        back_populates="repository", cascade="all, delete-orphan", order_by="AdapterVersion.version"
    )
    snapshots: Mapped[list[ContextSnapshot]] = relationship(back_populates="repository", cascade="all, delete-orphan")


class ContextSnapshot(Base):
    __tablename__ = "context_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"), index=True)
    commit_sha: Mapped[str] = mapped_column(String(64))
    context_digest: Mapped[str] = mapped_column(String(64), index=True)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    repository: Mapped[Repository] = relationship(back_populates="snapshots")


class AdapterVersion(Base):
    __tablename__ = "adapter_versions"
    __table_args__ = (UniqueConstraint("repository_id", "version", name="uq_adapter_versions_repo_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    commit_sha: Mapped[str] = mapped_column(String(64))
    hypernet_version: Mapped[str] = mapped_column(String(80))
    context_digest: Mapped[str] = mapped_column(String(64), index=True)
    artifact_sha256: Mapped[str] = mapped_column(String(64), index=True)
    artifact_path: Mapped[str] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(32), default="ready")
    # generated (hypernetwork, static context) | evolving (hypernetwork, recurrent state) | refined (trained)
    kind: Mapped[str] = mapped_column(String(16), default="generated", server_default="generated")
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)
    is_pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    repository: Mapped[Repository] = relationship(back_populates="versions")


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32))
    repository_id: Mapped[int | None] = mapped_column(
        ForeignKey("repositories.id", ondelete="SET NULL"), nullable=True, index=True
    )
    # queued -> running -> succeeded | failed
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Renewed every job_heartbeat_s while a process runs the job: a stale one means that process died.
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookDelivery(Base):
    """One received webhook delivery; the provider's delivery id makes redeliveries idempotent."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # "<provider>:<delivery id>"
    repository_id: Mapped[int | None] = mapped_column(
        ForeignKey("repositories.id", ondelete="SET NULL"), nullable=True, index=True
    )
    event: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(200))
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RepoLock(Base):
    """A per-repository write lock with expiry, so a crashed worker cannot hold it forever."""

    __tablename__ = "repo_locks"

    repository_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class AuditEvent(Base):
    """One state-changing request on the REST API or the dashboard: who, what, and how it ended."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    status: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
