"""Protective limits: request body size, per-client rate limits and an in-flight cap on completions."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time

from fastapi import HTTPException, Request, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.deps import StateDep


class BodySizeLimit:
    """413 for bodies over `max_bytes`, by Content-Length or while streaming in (chunked uploads)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _reject(send, self.max_bytes)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "request body too large")
            return message

        await self.app(scope, limited, send)


async def _reject(send: Send, limit: int) -> None:
    body = f'{{"detail":"request body over the {limit} byte limit"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class TokenBuckets:
    """Per-client token buckets: `rate` requests per second with bursts up to `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 if allowed, else the seconds until a token is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate


class FailureThrottle:
    """At most `limit` failures per key (a client address, a user name) within `window_s`; beyond, callers answer
    429 with the seconds until the oldest failure leaves the window. Memory stays bounded under a spray of keys."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(key, []) if t > now - self.window_s]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def retry_after(self, *keys: str) -> float:
        """0 when an attempt may be made now, else seconds to wait."""
        now = time.monotonic()
        with self._lock:
            waits = [times[0] + self.window_s - now for key in keys
                     if len(times := self._recent(key, now)) >= self.limit]
        return max(waits, default=0.0)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 10_000:  # bounded memory under a spray of addresses and names
                for key in list(self._failures):
                    self._recent(key, now)
            for key in keys:
                times = self._failures.setdefault(key, [])
                times.append(now)
                del times[:-self.limit]  # only the newest `limit` matter

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


def client_key(request: Request) -> str:
    """Rate-limit identity: a *configured* API key's hash, else the client address (a made-up bearer token
    must not buy a fresh bucket; the address is the peer's, see `trust_proxy_headers`)."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        hashed = "sha256:" + hashlib.sha256(auth[7:].strip().encode()).hexdigest()
        state = getattr(request.app.state, "c2l", None)
        keys = state.settings.api_keys if state is not None else []
        for key in keys:
            expected = key if key.startswith("sha256:") else "sha256:" + hashlib.sha256(key.encode()).hexdigest()
            if hmac.compare_digest(hashed, expected):
                return "key:" + hashed[7:23]
    return "ip:" + (request.client.host if request.client else "unknown")


def rate_limit(request: Request, state: StateDep) -> None:
    """429 with Retry-After when a client exceeds its rate (CODE2LORA_RATE_LIMIT_PER_S, 0 = off)."""
    buckets: TokenBuckets | None = getattr(request.app.state, "rate_buckets", None)
    if buckets is None:
        return
    wait = buckets.take(client_key(request))
    if wait > 0:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "rate limit exceeded",
                            headers={"Retry-After": str(max(1, int(wait + 0.999)))})


_register_lock = threading.Lock()


def register_rate_limit(request: Request, state: StateDep) -> None:
    """429 with Retry-After when a client registers repositories faster than CODE2LORA_REGISTER_RATE_PER_MIN
    (bursts of CODE2LORA_REGISTER_BURST): each registration makes the service connect somewhere (issue 21
    Medium 4). Refused attempts count too, so probing with bad URLs is throttled as well."""
    rate = state.settings.register_rate_per_min
    if rate <= 0:
        return
    with _register_lock:
        buckets = getattr(request.app.state, "register_buckets", None)
        if buckets is None:
            buckets = request.app.state.register_buckets = TokenBuckets(rate / 60.0, state.settings.register_burst)
    wait = buckets.take(client_key(request))
    if wait > 0:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "too many repository registrations, retry later",
                            headers={"Retry-After": str(max(1, int(wait + 0.999)))})


class InflightLimiter:
    """Completion work in flight: at most `limit` rows (prompts x n) and `token_limit` requested completion
    tokens (rows x max_tokens); beyond either, 503 with Retry-After instead of queueing forever."""

    def __init__(self, limit: int, token_limit: int | None = None) -> None:
        self.limit, self.active = limit, 0
        self.token_limit, self.tokens = token_limit, 0
        self._lock = threading.Lock()

    def try_enter(self, rows: int = 1, tokens: int = 0) -> bool:
        with self._lock:
            if self.active + rows > self.limit:
                return False
            if self.token_limit is not None and self.tokens + tokens > self.token_limit:
                return False
            self.active += rows
            self.tokens += tokens
            return True

    def leave(self, rows: int = 1, tokens: int = 0) -> None:
        with self._lock:
            self.active = max(0, self.active - rows)
            self.tokens = max(0, self.tokens - tokens)
