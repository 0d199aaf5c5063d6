"""Bearer API keys for /v1, /repos and /jobs: required when configured; without keys only loopback clients get in."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from fastapi import HTTPException, Request, status

from service.api.deps import StateDep


def hash_key(key: str) -> str:
    """How keys are stored in settings: `sha256:<hex>` (plain keys are accepted too)."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    """Whether `host` (a bind address or a client address) is loopback."""
    if host in ("localhost",):
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return (mapped or addr).is_loopback


# A proxy on the same machine connects from loopback on behalf of remote clients; these headers betray it.
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host")


def is_local_client(request: Request) -> bool:
    """The request comes straight from this machine: a loopback peer address and no proxy forwarding header.

    Decided from the connection itself, never from `settings.host` (uvicorn may be started with
    `--host 0.0.0.0` whatever the settings say). A unix-socket peer (no address) is not counted as local.
    """
    host = request.client.host if request.client else ""
    if not is_loopback(host):
        return False
    return not any(h in request.headers for h in FORWARDING_HEADERS)


def require_api_key(request: Request, state: StateDep) -> None:
    """401 unless the request carries a configured key; without keys, only direct loopback clients get in."""
    keys = state.settings.api_keys
    if not keys:
        if is_loopback(state.settings.host) and is_local_client(request):
            return
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "API keys are required for clients that are not on "
                            "this machine's loopback (or come through a proxy): set CODE2LORA_API_KEYS",
                            headers={"WWW-Authenticate": "Bearer"})
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
