"""The /admin dashboard: server-rendered pages over the same service functions as the REST API."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from fastapi import FastAPI, Request, status
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.admin import actions, pages
from service.api.admin.auth import LoginRequired, is_loopback
from service.api.admin.sessions import SESSION_MAX_AGE_S
from service.settings import Settings

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
SESSION_COOKIE = "c2l_admin"


async def _login_required(request: Request, exc: Exception) -> Response:
    # Browsers asking for a page get the login form; scripts and polls get a plain 401.
    if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
        return RedirectResponse(f"/admin/login?next={request.url.path}", status.HTTP_303_SEE_OTHER)
    return JSONResponse({"detail": "login required"}, status.HTTP_401_UNAUTHORIZED)


class SecureCookieOnTLS:
    """Mark the session cookie `Secure` when the request came over TLS (`request.url.scheme == "https"`): the
    middleware's own flag is fixed at start, and one service may be reached both ways."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = []
                for name, value in message.get("headers", []):
                    if (name.lower() == b"set-cookie" and value.startswith(SESSION_COOKIE.encode() + b"=")
                            and b"; secure" not in value.lower()):
                        value += b"; secure"
                    headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, secure)


def install(app: FastAPI, settings: Settings) -> None:
    """Add the dashboard routes, its static files and the signed-cookie session middleware to `app`."""
    secret = settings.session_secret
    if not secret:
        # Sessions then end with the process; several API replicas need a shared CODE2LORA_SESSION_SECRET.
        secret = secrets.token_urlsafe(32)
        if not is_loopback(settings.host):
            log.warning("CODE2LORA_SESSION_SECRET is not set: dashboard sessions end when this process stops")
    app.add_middleware(SessionMiddleware, secret_key=secret, session_cookie=SESSION_COOKIE,
                       max_age=SESSION_MAX_AGE_S, path="/admin", same_site="strict")
    app.add_middleware(SecureCookieOnTLS)  # outside the session middleware: sees its Set-Cookie
    app.add_exception_handler(LoginRequired, _login_required)
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
