"""Server-side dashboard sessions and login throttling (issue 21 Medium 9).

The signed cookie carries only a random session id (plus the CSRF token and flash messages); who is logged in,
with which role and under which password lives on the server (Redis when configured, so API replicas share it,
else this process), so logout revokes the id and a cookie copied before it no longer works, and nothing in the
cookie is derived from a password.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from typing import Any

from service.api.limits import FailureThrottle

SESSION_MAX_AGE_S = 8 * 3600  # a working day; the signed cookie carries its own expiry

log = logging.getLogger(__name__)
_PREFIX = "c2l:admin-session:"


class SessionStore:
    """sid -> {"user", "role", "fp"} with an expiry; Redis when a URL is given (falls back to memory on errors)."""

    def __init__(self, redis_url: str | None, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._mem: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._redis = None
        if redis_url:
            try:
                import redis

                self._redis = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
            except Exception as exc:  # noqa: BLE001 - memory keeps the dashboard usable
                log.warning("dashboard sessions in memory (Redis unusable: %s)", type(exc).__name__)

    def create(self, record: dict[str, Any]) -> str:
        sid = secrets.token_urlsafe(32)
        if self._redis is not None:
            try:
                self._redis.setex(_PREFIX + sid, self.ttl_s, json.dumps(record))
                return sid
            except Exception as exc:  # noqa: BLE001
                log.warning("dashboard session kept in memory (Redis: %s)", type(exc).__name__)
        with self._lock:
            now = time.monotonic()
            self._mem = {k: v for k, v in self._mem.items() if v[0] > now} if len(self._mem) > 1000 else self._mem
            self._mem[sid] = (now + self.ttl_s, record)
        return sid

    def get(self, sid: object) -> dict[str, Any] | None:
        if not isinstance(sid, str) or not sid:
            return None
        with self._lock:
            entry = self._mem.get(sid)
            if entry is not None:
                if entry[0] > time.monotonic():
                    return entry[1]
                self._mem.pop(sid, None)
        if self._redis is not None:
            try:
                raw = self._redis.get(_PREFIX + sid)
                return json.loads(raw) if raw else None
            except Exception:  # noqa: BLE001 - unreachable store: not logged in (fail closed)
                return None
        return None

    def revoke(self, sid: object) -> None:
        if not isinstance(sid, str) or not sid:
            return
        with self._lock:
            self._mem.pop(sid, None)
        if self._redis is not None:
            try:
                self._redis.delete(_PREFIX + sid)
            except Exception as exc:  # noqa: BLE001
                log.error("could not revoke a dashboard session in Redis: %s", type(exc).__name__)


class LoginThrottle(FailureThrottle):
    """At most `limit` failed logins per client address and per user name within `window_s`; beyond, 429 with
    the seconds until the oldest failure leaves the window. A success clears that user's failures."""
