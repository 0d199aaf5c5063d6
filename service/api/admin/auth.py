"""Dashboard authentication: an admin and a read-only user from settings, sessions in signed cookies."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import threading
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from service.api.admin.sessions import SESSION_MAX_AGE_S, SessionStore
from service.settings import Settings

ADMIN = "admin"
READONLY = "readonly"
_store_lock = threading.Lock()


@dataclass(frozen=True)
class Principal:
    """Who is looking at the dashboard and with which role."""

    user: str
    role: str

    @property
    def can_act(self) -> bool:
        """Whether this principal may post actions."""
        return self.role == ADMIN


class LoginRequired(Exception):
    """Raised by dependencies when nobody is logged in; turned into a redirect or a 401."""


def is_loopback(host: str) -> bool:
    """Whether `host` (the address the service binds to) is loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _digest(secret: str) -> str:
    return secret if secret.startswith("sha256:") else "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def _accounts(settings: Settings) -> dict[str, tuple[str, str]]:
    """user -> (role, password digest) for the users that have a password."""
    accounts: dict[str, tuple[str, str]] = {}
    if settings.readonly_password:
        accounts[settings.readonly_user] = (READONLY, _digest(settings.readonly_password))
    if settings.admin_password:  # admin wins if both users share a name
        accounts[settings.admin_user] = (ADMIN, _digest(settings.admin_password))
    return accounts


def auth_configured(settings: Settings) -> bool:
    """Whether any dashboard user has a password."""
    return bool(settings.admin_password or settings.readonly_password)


def open_without_login(settings: Settings, request: Request) -> bool:
    """No users configured, bound to loopback, and the request comes straight from loopback: admin without a
    login. The same client check as the REST API's (`service.api.auth.is_local_client`): a loopback peer *and*
    no forwarding header, so a reverse proxy on this machine does not make remote clients local."""
    from service.api.auth import is_local_client

    # The client check also covers a server started on another address than settings.host
    # (e.g. `uvicorn --host 0.0.0.0`), where settings alone would wrongly say "loopback".
    return not auth_configured(settings) and is_loopback(settings.host) and is_local_client(request)


def _fingerprint(digest: str) -> str:
    # Stored in the session so that changing a password ends that user's existing sessions.
    return hashlib.sha256(b"c2l-session:" + digest.encode()).hexdigest()[:16]


def authenticate(settings: Settings, user: str, password: str) -> Principal | None:
    """The principal for valid credentials, else None (constant-time comparison)."""
    role, digest = _accounts(settings).get(user, (None, "sha256:"))
    ok = hmac.compare_digest(_digest(password), digest)
    return Principal(user, role) if ok and role else None


def session_store(request: Request) -> SessionStore:
    """The app's server-side session store (created on first use)."""
    app_state = request.app.state
    store = getattr(app_state, "admin_sessions", None)
    if store is None:
        with _store_lock:
            store = getattr(app_state, "admin_sessions", None)
            if store is None:
                store = app_state.admin_sessions = SessionStore(app_state.c2l.settings.redis_url, SESSION_MAX_AGE_S)
    return store


def login(request: Request, principal: Principal) -> None:
    """Start a session for `principal`: a new server-side id (the old one, if any, is revoked), and the cookie is
    rebuilt so no pre-login value survives. The password fingerprint stays on the server."""
    digest = _accounts(request.app.state.c2l.settings)[principal.user][1]
    store = session_store(request)
    store.revoke(request.session.get("sid"))
    request.session.clear()
    sid = store.create({"user": principal.user, "role": principal.role, "fp": _fingerprint(digest)})
    request.session.update(sid=sid, user=principal.user)  # `user` only names the actor in the audit trail


def logout(request: Request) -> None:
    """End the session: the server forgets its id, so a copy of the cookie is worthless."""
    session_store(request).revoke(request.session.get("sid"))
    request.session.clear()


def current_principal(request: Request) -> Principal | None:
    """The logged-in principal, the implicit local admin on an unconfigured loopback service, or None."""
    settings: Settings = request.app.state.c2l.settings
    if open_without_login(settings, request):
        return Principal("local", ADMIN)
    record = session_store(request).get(request.session.get("sid"))
    if record is None:
        return None
    user = record.get("user")
    account = _accounts(settings).get(user) if isinstance(user, str) else None
    if account is None or not isinstance(user, str) or record.get("role") != account[0]:
        return None
    # A changed password ends the sessions opened with the old one.
    if not hmac.compare_digest(str(record.get("fp", "")), _fingerprint(account[1])):
        return None
    return Principal(user, account[0])


def require_viewer(request: Request) -> Principal:
    """Any logged-in principal; raises LoginRequired otherwise."""
    principal = current_principal(request)
    if principal is None:
        raise LoginRequired()
    return principal


def require_admin(request: Request) -> Principal:
    """A principal allowed to act; 403 for the read-only role."""
    principal = require_viewer(request)
    if not principal.can_act:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the read-only role cannot change anything")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
ViewerDep = Annotated[Principal, Depends(require_viewer)]
