"""Bearer API keys for /v1: required when configured; without keys only a loopback-bound service is open."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from fastapi import Depends, HTTPException, Request, status

from service.api.deps import get_state
from service.state import ServiceState


def hash_key(key: str) -> str:
    """How keys are stored in settings: `sha256:<hex>` (plain keys are accepted too)."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    """Whether the service binds to a loopback address only."""
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_api_key(request: Request, state: ServiceState = Depends(get_state)) -> None:
    """401 unless the request carries a configured key (or the service is loopback-only without keys)."""
    keys = state.settings.api_keys
    if not keys:
        if is_loopback(state.settings.host):
            return
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "API keys are required when the service is not bound to "
                            "loopback: set CODE2LORA_API_KEYS", headers={"WWW-Authenticate": "Bearer"})
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if token:
        hashed = hash_key(token)
        for key in keys:
            expected = key if key.startswith("sha256:") else hash_key(key)
            if hmac.compare_digest(hashed, expected):
                return
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or missing API key",
                        headers={"WWW-Authenticate": "Bearer"})
