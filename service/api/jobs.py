"""/jobs: status and progress of background work."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status

from service.api.auth import require_api_key
from service.api.deps import SessionDep
from service.api.schemas import JobOut
from service.db.models import Job

# Same rule as /v1: API keys when configured; without keys only direct loopback clients (service.api.auth).
router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Depends(require_api_key)])


@router.get("/{job_id}", response_model=JobOut, responses={404: {"description": "Unknown job"}})
def get_job(job_id: str, session: SessionDep) -> JobOut:
    """A job's status, progress (0..1), message and error."""
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id!r} not found")
    return JobOut.model_validate(job)
