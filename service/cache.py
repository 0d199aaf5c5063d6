"""Adapter-bytes cache and active-version pointers: Redis when configured, in-process otherwise.

Redis failures never fail a request: the cache logs a warning, counts it, and callers fall back to
the artifact folder and the DB (the source of truth).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Protocol, cast

from service.metrics import CACHE_EVENTS, REDIS_DOWN

log = logging.getLogger(__name__)


class AdapterCache(Protocol):
    """What the service needs from a cache."""

    def get(self, sha256: str) -> bytes | None: ...
    def put(self, sha256: str, data: bytes) -> None: ...
    def delete(self, sha256: str) -> None: ...
    def set_active(self, repo_id: int, version: int | None) -> None: ...
    def get_active(self, repo_id: int) -> int | None: ...
    def health(self) -> dict[str, object]: ...


class MemoryCache:
    """Bounded LRU with TTL, for the embedded default and as the fallback behind Redis."""

    def __init__(self, max_entries: int = 64, ttl_s: float = 3600.0) -> None:
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._active: dict[int, int | None] = {}
        self._max, self._ttl = max_entries, ttl_s
        self._lock = threading.Lock()

    def get(self, sha256: str) -> bytes | None:
        with self._lock:
            item = self._data.get(sha256)
            if item is None or item[0] < time.monotonic():
                self._data.pop(sha256, None)
                CACHE_EVENTS.labels("miss").inc()
                return None
            self._data.move_to_end(sha256)
            CACHE_EVENTS.labels("hit").inc()
            return item[1]

    def put(self, sha256: str, data: bytes) -> None:
        with self._lock:
            self._data[sha256] = (time.monotonic() + self._ttl, data)
            self._data.move_to_end(sha256)
            while len(self._data) > self._max:
                self._data.popitem(last=False)
            CACHE_EVENTS.labels("put").inc()

    def delete(self, sha256: str) -> None:
        with self._lock:
            self._data.pop(sha256, None)

    def set_active(self, repo_id: int, version: int | None) -> None:
        with self._lock:
            self._active[repo_id] = version

    def get_active(self, repo_id: int) -> int | None:
        with self._lock:
            return self._active.get(repo_id)

    def __len__(self) -> int:
        return len(self._data)

    def health(self) -> dict[str, object]:
        return {"kind": "memory", "ok": True, "entries": len(self._data)}


class RedisCache:
    """Redis-backed cache: bytes with a TTL, an LRU index bounded to `max_entries`, active pointers."""

    PREFIX = "code2lora:"

    def __init__(self, url: str, max_entries: int = 256, ttl_s: int = 86400) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._max, self._ttl = max_entries, ttl_s
        self._lru_key = self.PREFIX + "lru"

    def _fail(self, op: str, exc: Exception) -> None:
        REDIS_DOWN.inc()
        CACHE_EVENTS.labels("error").inc()
        log.warning("redis %s failed, falling back to DB/artifacts: %s", op, exc)

    def get(self, sha256: str) -> bytes | None:
        try:
            # the client is made without decode_responses: values are bytes
            data = cast(bytes | None, self._redis.get(self.PREFIX + "adapter:" + sha256))
            if data is not None:
                self._redis.zadd(self._lru_key, {sha256: time.time()})
        except Exception as exc:  # noqa: BLE001 - any Redis failure degrades to a miss
            self._fail("get", exc)
            return None
        CACHE_EVENTS.labels("hit" if data is not None else "miss").inc()
        return data

    def put(self, sha256: str, data: bytes) -> None:
        try:
            pipe = self._redis.pipeline()
            pipe.set(self.PREFIX + "adapter:" + sha256, data, ex=self._ttl)
            pipe.zadd(self._lru_key, {sha256: time.time()})
            pipe.execute()
            excess = self._redis.zcard(self._lru_key) - self._max
            if excess > 0:
                # Evict the least recently used beyond the bound.
                old = cast(list[bytes], self._redis.zrange(self._lru_key, 0, excess - 1))
                if old:
                    pipe = self._redis.pipeline()
                    pipe.delete(*[self.PREFIX + "adapter:" + k.decode() for k in old])
                    pipe.zrem(self._lru_key, *old)
                    pipe.execute()
            CACHE_EVENTS.labels("put").inc()
        except Exception as exc:  # noqa: BLE001
            self._fail("put", exc)

    def delete(self, sha256: str) -> None:
        try:
            self._redis.delete(self.PREFIX + "adapter:" + sha256)
            self._redis.zrem(self._lru_key, sha256)
        except Exception as exc:  # noqa: BLE001
            self._fail("delete", exc)

    def set_active(self, repo_id: int, version: int | None) -> None:
        try:
            key = f"{self.PREFIX}active:{repo_id}"
            if version is None:
                self._redis.delete(key)
            else:
                self._redis.set(key, version)
        except Exception as exc:  # noqa: BLE001
            self._fail("set_active", exc)

    def get_active(self, repo_id: int) -> int | None:
        try:
            value = self._redis.get(f"{self.PREFIX}active:{repo_id}")
        except Exception as exc:  # noqa: BLE001
            self._fail("get_active", exc)
            return None
        return int(value) if value is not None else None

    def health(self) -> dict[str, object]:
        try:
            self._redis.ping()
            return {"kind": "redis", "ok": True, "entries": int(self._redis.zcard(self._lru_key))}
        except Exception as exc:  # noqa: BLE001
            return {"kind": "redis", "ok": False, "error": str(exc)}


def make_cache(redis_url: str | None, max_entries: int, ttl_s: int) -> AdapterCache:
    """Redis cache when a URL is configured, else the in-process LRU."""
    if redis_url:
        return RedisCache(redis_url, max_entries=max_entries, ttl_s=ttl_s)
    return MemoryCache(max_entries=max_entries, ttl_s=ttl_s)
