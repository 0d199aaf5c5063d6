"""Bearer API keys for /v1, /repos and /jobs: required when configured; without keys only loopback clients get in."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import threading

from fastapi import HTTPException, Request, status

from service.api.deps import StateDep
from service.api.limits import FailureThrottle

log = logging.getLogger(__name__)


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
        # Key guessing is throttled per client address (issue 21 Low 11): past api_key_max_failures wrong keys in
        # api_key_failure_window_s, every key from that address is refused with 429 until the window frees up,
        # the right one too, so a guess's answer says nothing.
        throttle, client = _key_throttle(request, state), _client_address(request)
        wait = throttle.retry_after(client)
        if wait > 0:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "too many wrong API keys from this address, "
                                "retry later", headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        hashed = hash_key(token)
        for key in keys:
            expected = key if key.startswith("sha256:") else hash_key(key)
            if hmac.compare_digest(hashed, expected):
                return
        throttle.failed(client)
        log.warning("wrong API key from %s", client)
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or missing API key",
                        headers={"WWW-Authenticate": "Bearer"})


def has_api_access(request: Request, state: StateDep) -> bool:
    """Whether `require_api_key` would let this request in (a wrong key counts toward the throttle here too)."""
    try:
        require_api_key(request, state)
    except HTTPException:
        return False
    return True


def _client_address(request: Request) -> str:
    """The peer address (a proxy's forwarding header only counts with trust_proxy_headers, set by uvicorn)."""
    return "ip:" + (request.client.host if request.client else "unknown")


_throttle_lock = threading.Lock()


def _key_throttle(request: Request, state: StateDep) -> FailureThrottle:
    app_state = request.app.state
    with _throttle_lock:
        throttle = getattr(app_state, "api_key_throttle", None)
        if throttle is None:
            throttle = app_state.api_key_throttle = FailureThrottle(state.settings.api_key_max_failures,
                                                                    state.settings.api_key_failure_window_s)
    return throttle
