"""Jinja2 environment of the dashboard and the render helper that every page goes through."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from service.api.admin.auth import Principal
from service.api.admin.csrf import FIELD, csrf_token
from service.names import public_name

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "templates"
templates = Jinja2Templates(directory=str(TEMPLATE_DIR))


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def _short(value: str | None, n: int = 12) -> str:
    return value[:n] if value else "—"


templates.env.filters["when"] = _when
templates.env.filters["short"] = _short
templates.env.filters["public_name"] = public_name


def flash(request: Request, kind: str, text: str) -> None:
    """Queue a one-line message for the next rendered page (kind: ok or error)."""
    request.session.setdefault("flash", []).append([kind, text])
    request.session["flash"] = request.session["flash"]  # mark the session as modified


def render(request: Request, name: str, principal: Principal | None, *, status_code: int = 200,
           **context: Any) -> Response:
    """Render `admin/<name>` with the principal, CSRF token and pending flash messages."""
    messages = request.session.pop("flash", []) if "flash" in request.session else []
    state = getattr(request.app.state, "c2l", None)
    base = dict(principal=principal, csrf_field=FIELD, csrf=csrf_token(request), messages=messages,
                adapters_off=getattr(state, "adapters_off", None))
    return templates.TemplateResponse(request, f"admin/{name}", {**base, **context}, status_code=status_code)
