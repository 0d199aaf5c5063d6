"""Adapter cache: in-process LRU, Redis with LRU bound, and graceful Redis outage."""

from __future__ import annotations

import pytest

from service.cache import MemoryCache, RedisCache
from tests.conftest import REDIS_URL, redis_available, reset_redis


def test_memory_lru_bound_and_ttl() -> None:
    c = MemoryCache(max_entries=2, ttl_s=60)
    c.put("a", b"1")
    c.put("b", b"2")
    assert c.get("a") == b"1"  # a is now most recent
    c.put("c", b"3")
    assert c.get("b") is None and c.get("a") == b"1" and c.get("c") == b"3"
    expired = MemoryCache(max_entries=2, ttl_s=-1)
    expired.put("x", b"1")
    assert expired.get("x") is None


def test_memory_active_pointer() -> None:
    c = MemoryCache()
    assert c.get_active(1) is None
    c.set_active(1, 3)
    assert c.get_active(1) == 3
    c.set_active(1, None)
    assert c.get_active(1) is None


@pytest.mark.skipif(not redis_available(), reason="Redis not reachable")
def test_redis_cache_roundtrip_and_lru() -> None:
    reset_redis(REDIS_URL)
    c = RedisCache(REDIS_URL, max_entries=2, ttl_s=60)
    c.put("a", b"1")
    c.put("b", b"2")
    assert c.get("a") == b"1"
    c.put("c", b"3")
    assert c.get("b") is None and c.get("a") == b"1"
    c.set_active(7, 2)
    assert c.get_active(7) == 2
    assert c.health()["ok"] is True


def test_redis_down_degrades_to_miss() -> None:
    c = RedisCache("redis://127.0.0.1:1/0", max_entries=2, ttl_s=60)
    c.put("a", b"1")  # must not raise
    assert c.get("a") is None
    assert c.get_active(1) is None
    assert c.health()["ok"] is False
