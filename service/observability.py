"""Request ids, structured JSON logs and per-route request metrics."""

from __future__ import annotations

import contextvars
import json
import logging
import time
import uuid

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response

from service.metrics import REQUEST_LATENCY, REQUESTS

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SECRET_KEYS = ("secret", "token", "password", "authorization", "api_key")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id of the request being served."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage(), "request_id": request_id.get()}
        for key, value in record.__dict__.items():
            if key.startswith("c2l_"):
                # never log secrets, even when a caller passes one by mistake
                out[key[4:]] = "***" if any(s in key for s in _SECRET_KEYS) else value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    """Root logging: JSON lines (default) or plain text."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_logs else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _route_template(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class RequestContextMiddleware(BaseHTTPMiddleware):
    """Assign or propagate `X-Request-ID`, time the request and count it per route and status."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        token = request_id.set(rid[:64])
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = rid[:64]
            return response
        finally:
            route = _route_template(request)
            REQUESTS.labels(request.method, route, str(status)).inc()
            REQUEST_LATENCY.labels(request.method, route).observe(time.perf_counter() - start)
            logging.getLogger("code2lora.access").info(
                "%s %s %d %.1fms", request.method, request.url.path, status, (time.perf_counter() - start) * 1e3)
            request_id.reset(token)
