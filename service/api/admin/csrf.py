"""CSRF protection for dashboard forms: a random token per session, echoed by every form post."""

from __future__ import annotations

import hmac
import secrets

from fastapi import HTTPException, Request, status

FIELD = "csrf_token"
HEADER = "x-csrf-token"


def csrf_token(request: Request) -> str:
    """This session's token, created on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def verify_csrf(request: Request) -> None:
    """403 unless the form field (or header) carries this session's token."""
    expected = request.session.get("csrf")
    sent = request.headers.get(HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        field = (await request.form()).get(FIELD)
        sent = field if isinstance(field, str) else None
    if not isinstance(expected, str) or not isinstance(sent, str) or not hmac.compare_digest(sent, expected):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or invalid CSRF token; reload the page")
