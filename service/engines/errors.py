"""Engine exceptions; the API layer maps each to an HTTP status (see ``http_status``)."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error an engine raises on purpose."""

    status_code: int = 500
    error_type: str = "engine_error"


class EngineUnavailable(EngineError):
    """The inference backend is down or unreachable (HTTP 503 with Retry-After)."""

    status_code = 503
    error_type = "service_unavailable"

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AdapterRejected(EngineError):
    """The backend refused to load an adapter (HTTP 502 with the backend's message)."""

    status_code = 502
    error_type = "adapter_rejected"

    def __init__(self, message: str, adapter_id: str | None = None, upstream_status: int | None = None) -> None:
        super().__init__(message)
        self.adapter_id = adapter_id
        self.upstream_status = upstream_status


class EngineAuthFailed(EngineError):
    """The backend refused the service's credentials, e.g. vLLM started with ``--api-key`` and the service has no key
    or another one (HTTP 502: the service is misconfigured, not the client)."""

    status_code = 502
    error_type = "engine_auth_failed"


class InvalidGenerationRequest(EngineError):
    """The request cannot be served as asked, e.g. prompt longer than the context (HTTP 400)."""

    status_code = 400
    error_type = "invalid_request_error"


class EngineStepFailed(EngineError):
    """A model step failed for this request's rows (HTTP 500); other requests are not affected."""

    status_code = 500
    error_type = "internal_server_error"


class EngineClosed(EngineUnavailable):
    """The engine was shut down while the request was queued or running."""


def http_status(exc: EngineError) -> int:
    """HTTP status code the API layer should answer for ``exc``."""
    return exc.status_code
