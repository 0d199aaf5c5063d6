"""What the job modules share and nothing else: the queue protocol, the error a user sees, the progress reporter.

No project imports here, so the state, the queue, the runner and the job bodies can all depend on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Reporter = Callable[[float, str], None]  # (progress 0..1, message); also the job's heartbeat


class JobQueue(Protocol):
    """Where job ids go to be run by `service.jobs.runner.run_job`."""

    def enqueue(self, job_id: str) -> None: ...
    def depth(self) -> int: ...
    def shutdown(self) -> None: ...


class JobError(RuntimeError):
    """A failure whose message is shown to the user as is."""


class JobTimeLimit(JobError):
    """The job ran past CODE2LORA_JOB_TIMEOUT_S (checked at every progress report of an in-process job)."""
