"""Audit trail: every state-changing request to /repos and /admin is recorded in the database."""

from __future__ import annotations

import hashlib
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db.models import AuditEvent
from service.observability import request_id

log = logging.getLogger(__name__)
_AUDITED_PREFIXES = ("/repos", "/admin")
_SKIPPED = ("/admin/logout",)  # logins are audited: failed ones show as 401 (or 429 when throttled)


def actor_of(scope: Scope) -> str:
    """Dashboard user, API key fingerprint, or client address (secrets never stored)."""
    session = scope.get("session") or {}
    if session.get("user"):
        return f"admin:{session['user']}"
    headers = dict(scope.get("headers") or [])
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return "key:" + hashlib.sha256(auth[7:].strip().encode()).hexdigest()[:12]
    client = scope.get("client")
    return f"ip:{client[0]}" if client else "unknown"


class AuditMiddleware:
    """Record method, path, actor and final status of mutating requests (after the response)."""

    def __init__(self, app: ASGIApp, sessions_getter) -> None:
        self.app, self._sessions = app, sessions_getter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS")
                or not path.startswith(_AUDITED_PREFIXES) or path.startswith(_SKIPPED)):
            await self.app(scope, receive, send)
            return
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            self._record(scope, path, status)

    def _record(self, scope: Scope, path: str, status: int) -> None:
        sessions = self._sessions()
        if sessions is None:
            return
        try:
            with sessions.begin() as s:
                s.add(AuditEvent(actor=actor_of(scope)[:200], method=scope["method"], path=path[:500],
                                 status=status, request_id=request_id.get()))
        except Exception as exc:  # noqa: BLE001 - the audit must not turn a success into an error
            log.error("audit write failed: %s", exc)
