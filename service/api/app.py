"""FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api import admin, health, jobs, repos, v1, webhooks
from service.api.limits import BodySizeLimit, InflightLimiter, TokenBuckets
from service.audit import AuditMiddleware
from service.bootstrap import build_state, start_engine, stop_engine
from service.observability import RequestContextMiddleware
from service.settings import Settings, get_settings
from service.state import ServiceState

log = logging.getLogger(__name__)


def _json_message(error: dict) -> str:
    """What is wrong with a body that is not JSON, from pydantic's json_invalid error."""
    loc = error.get("loc", ())
    where = f" at character {loc[1]}" if len(loc) > 1 and isinstance(loc[1], int) else ""
    reason = str((error.get("ctx") or {}).get("error") or "invalid JSON")
    return (f"We could not parse the JSON body of your request: {reason}{where}. "
            "The API expects a JSON object (content-type: application/json).")


def _install_openai_errors(app: FastAPI) -> None:
    """Under /v1 every error has OpenAI's shape, so OpenAI clients raise their usual exceptions."""
    from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/v1/"):
            return v1.openai_error(exc.status_code, str(exc.detail), "invalid_request_error"
                                   if exc.status_code < 500 else "server_error", headers=exc.headers)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        if request.url.path.startswith("/v1/"):
            if first.get("type") == "json_invalid":  # loc is ("body", <character offset>): not a parameter
                return v1.openai_error(400, _json_message(first), "invalid_request_error")
            if tuple(first.get("loc", ())) == ("body",) and first.get("type") == "missing":
                return v1.openai_error(400, "The request body is empty: send a JSON object.", "invalid_request_error")
            param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
            return v1.openai_error(400, f"{param or 'request body'}: {first.get('msg', 'invalid request')}",
                                   "invalid_request_error", param)
        if first.get("type") == "json_invalid":  # the REST shape, with a message that says what is wrong
            detail = [{"type": "json_invalid", "loc": ["body"], "msg": _json_message(first)}]
            return JSONResponse({"detail": detail}, status_code=422)
        try:
            return await request_validation_exception_handler(request, exc)
        except (UnicodeEncodeError, ValueError):  # the echoed input cannot be written as it is: see below
            return _validation_fallback(exc.errors())


def _validation_fallback(errors: Sequence[Any]) -> Response:
    """A 422 whose echoed input holds a lone surrogate (escaped here) or NaN / Infinity, which Python's json reads
    in a request body but JSON cannot carry (the echo is left out); instead of a 500."""
    import json

    from fastapi.encoders import jsonable_encoder

    try:
        body = json.dumps({"detail": jsonable_encoder(errors)}, ensure_ascii=True, allow_nan=False)
    except ValueError:
        plain = [{k: v for k, v in e.items() if k != "input"} for e in errors]
        body = json.dumps({"detail": jsonable_encoder(plain)}, ensure_ascii=True, allow_nan=False)
    return Response(body, status_code=422, media_type="application/json")


def _install_database_errors(app: FastAPI) -> None:
    """Database or job queue unreachable (PostgreSQL restarting, Redis down): 503 + Retry-After, not a 500."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.error("database unavailable on %s %s: %s", request.method, request.url.path,
                  str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        headers = {"Retry-After": "5"}
        message = "database unavailable, retry later"
        if request.url.path.startswith("/v1/"):
            return v1.openai_error(503, message, "service_unavailable", headers=headers)
        return JSONResponse({"detail": message}, status_code=503, headers=headers)

    app.add_exception_handler(OperationalError, _unavailable)
    app.add_exception_handler(InterfaceError, _unavailable)

    from service.jobs.queue import QueueUnavailable

    @app.exception_handler(QueueUnavailable)
    async def _queue_down(request: Request, exc: QueueUnavailable) -> JSONResponse:
        return JSONResponse({"detail": "job queue unavailable, nothing was queued; retry later"},
                            status_code=503, headers={"Retry-After": "5"})


def _install_input_errors(app: FastAPI) -> None:
    """Input the database cannot hold (an integer past 64 bits, a lone surrogate) is the client's error: 400.

    The routes check such input first (`find_repo`, `resolve_model`, the request models); this is the net
    under them, so an unauthenticated request can never turn one into a 500.
    """
    from sqlalchemy.exc import DataError, StatementError

    async def _invalid(request: Request, exc: Exception) -> JSONResponse:
        log.warning("invalid input on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        message = "invalid input: a number out of range or text that is not valid Unicode"
        if request.url.path.startswith("/v1/"):
            return v1.openai_error(400, message, "invalid_request_error")
        return JSONResponse({"detail": message}, status_code=400)

    async def _statement(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, StatementError) and isinstance(exc.orig, (OverflowError, UnicodeError)):
            return await _invalid(request, exc)
        raise exc

    for exc_type in (OverflowError, UnicodeEncodeError, DataError):
        app.add_exception_handler(exc_type, _invalid)
    app.add_exception_handler(StatementError, _statement)


def create_app(settings: Settings | None = None, state: ServiceState | None = None) -> FastAPI:
    """Build the app; on start the DB is migrated to head, the queue started and the engine loaded."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = state is None
        # Unfinished jobs resume only once the engine has started: a resumed job imports torch/transformers in its
        # thread, and doing that while the engine imported them failed the job (issue 21 Medium 8:
        # `ImportError: cannot import name 'AutoConfig'` after a kill -9, and a server that never came up).
        app.state.c2l = c2l = state or build_state(settings, start_queue=False)
        await start_engine(c2l)
        resume = getattr(c2l.queue, "resume_unfinished", None)
        if own and resume is not None:
            resumed = resume()
            if resumed:
                log.info("re-queued %d unfinished jobs", resumed)
        try:
            yield
        finally:
            if own:
                await stop_engine(c2l)
                c2l.close()

    app = FastAPI(
        title="code2lora",
        version="0.1.0",
        description="Repository-specific LoRA adapters, generated by a hypernetwork and served per repository.",
        lifespan=lifespan,
    )
    _install_openai_errors(app)
    _install_database_errors(app)
    _install_input_errors(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    if settings.cors_origins:  # closed unless an allow-list is configured
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type"])
    # Inside the session middleware (added by admin.install), so the audit sees the dashboard user.
    app.add_middleware(AuditMiddleware, sessions_getter=lambda: getattr(getattr(app.state, "c2l", None), "sessions", None))
    app.add_middleware(RequestContextMiddleware)
    app.state.rate_buckets = (TokenBuckets(settings.rate_limit_per_s, settings.rate_limit_burst)
                              if settings.rate_limit_per_s > 0 else None)
    app.state.inflight = InflightLimiter(settings.max_inflight_completions, settings.max_inflight_tokens)
    app.include_router(health.router)
    app.include_router(repos.router)
    app.include_router(jobs.router)
    app.include_router(webhooks.router)
    app.include_router(v1.router)
    admin.install(app, settings)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        """The dashboard's icon (browsers ask for it on every page)."""
        return Response(_FAVICON.read_bytes(), media_type="image/x-icon",
                        headers={"Cache-Control": "public, max-age=86400"})

    return app


_FAVICON = Path(__file__).resolve().parents[1] / "static" / "favicon.ico"
