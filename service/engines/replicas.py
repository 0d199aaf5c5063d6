"""Several vLLM replicas behind one engine: adapter-affinity routing with failover.

Each request goes to the replica that rendezvous hashing (highest random weight) ranks first for its adapter's
engine-side name, so an adapter is registered on one replica and stays warm there; removing a replica moves only the
adapters it held. Base requests (no adapter) hash on their request id and spread over all replicas. When a replica
is unreachable or answers 503 (`EngineUnavailable`), the request goes to the next replica in that adapter's order,
which registers the adapter on demand (the per-replica logic is `VllmEngine`'s, one instance per replica); the failed
replica is tried last until ``cooldown`` seconds have passed. A replica that comes back after a restart has forgotten
its runtime adapters: its `VllmEngine` sees the 404 and registers them again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from .base import BASE_ADAPTER, EngineHealth, EngineStats, GenerationRequest, GenerationResult, StreamDelta
from .errors import EngineUnavailable
from .stats import StatsRecorder
from .vllm import VllmEngine


def rendezvous_order(key: str, replicas: Sequence[str]) -> list[str]:
    """``replicas`` ranked for ``key`` by rendezvous hashing: highest sha256(replica, key) first."""
    def weight(replica: str) -> bytes:
        return hashlib.sha256(replica.encode() + b"\0" + key.encode()).digest()

    return sorted(replicas, key=weight, reverse=True)


@dataclass
class ReplicaState:
    """What the router knows of one replica: its last failure and the requests it served."""

    url: str
    down_since: float | None = None
    last_error: str = ""
    served: int = 0
    failovers: int = 0  # requests that left this replica for the next one


class ReplicatedVllmEngine:
    """One `VllmEngine` per replica URL, each adapter routed to its replica by rendezvous hashing, with failover."""

    name = "vllm"

    def __init__(self, engines: Sequence[VllmEngine], *, cooldown: float = 10.0) -> None:
        if not engines:
            raise ValueError("at least one replica")
        self.engines: dict[str, VllmEngine] = {e.base_url: e for e in engines}
        if len(self.engines) != len(engines):
            raise ValueError("replica URLs must be distinct")
        self.state = {url: ReplicaState(url) for url in self.engines}
        self.cooldown = cooldown
        self._stats = StatsRecorder()
        self._inflight: Counter[str] = Counter()

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every replica's client."""
        for engine in self.engines.values():
            await engine.start()

    async def aclose(self) -> None:
        """Close every replica's client."""
        for engine in self.engines.values():
            await engine.aclose()

    @property
    def tokenizer(self) -> Any:
        """The base model tokenizer (every replica serves the same base model)."""
        return next(iter(self.engines.values())).tokenizer

    # ---- routing -----------------------------------------------------------------------------
    def order(self, key: str) -> list[str]:
        """Replica URLs in the order a request for ``key`` tries them: the hash order, cooling-down replicas last."""
        ranked = rendezvous_order(key, list(self.engines))
        now = time.monotonic()

        def cooling(url: str) -> bool:
            since = self.state[url].down_since
            return since is not None and now - since < self.cooldown

        return [u for u in ranked if not cooling(u)] + [u for u in ranked if cooling(u)]

    def replica_for(self, adapter_id: str) -> str:
        """The replica an adapter is served from while every replica is up."""
        return rendezvous_order(adapter_id, list(self.engines))[0]

    def _mark_down(self, url: str, exc: Exception) -> None:
        state = self.state[url]
        state.down_since = time.monotonic()
        state.last_error = str(exc)
        state.failovers += 1

    def _mark_up(self, url: str) -> None:
        state = self.state[url]
        state.down_since = None
        state.served += 1

    @staticmethod
    def _key(request: GenerationRequest) -> str:
        return request.adapter.id if request.adapter else f"{BASE_ADAPTER}/{request.request_id}"

    @staticmethod
    def _stats_key(request: GenerationRequest) -> str:
        return request.adapter.id if request.adapter else BASE_ADAPTER

    @staticmethod
    def _all_failed(error: EngineUnavailable | None) -> EngineUnavailable:
        """The error to raise when every replica in the order failed (there is at least one replica)."""
        assert error is not None
        return EngineUnavailable(f"every vLLM replica failed; last: {error}", error.retry_after)

    # ---- adapters ----------------------------------------------------------------------------
    async def ensure_loaded(self, adapter_id: str, path: str) -> None:
        """Register ``adapter_id`` on the first replica of its order that answers."""
        error: EngineUnavailable | None = None
        for url in self.order(adapter_id):
            try:
                await self.engines[url].ensure_loaded(adapter_id, path)
                return
            except EngineUnavailable as exc:
                self._mark_down(url, exc)
                error = exc
        assert error is not None
        raise error

    async def unload(self, adapter_id: str) -> None:
        """Unregister ``adapter_id`` from every replica that holds it (after a failover it may be on several)."""
        for url, engine in self.engines.items():
            if adapter_id in engine.loaded():
                try:
                    await engine.unload(adapter_id)
                except EngineUnavailable as exc:  # a replica that is down lost its runtime adapters anyway
                    self._mark_down(url, exc)

    # ---- generation --------------------------------------------------------------------------
    async def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        started = time.perf_counter()
        key = self._stats_key(request)
        error: EngineUnavailable | None = None
        self._inflight[key] += 1
        try:
            for url in self.order(self._key(request)):
                try:
                    result = (await self.engines[url].generate([request]))[0]
                except EngineUnavailable as exc:
                    self._mark_down(url, exc)
                    error = exc
                    continue
                self._mark_up(url)
                self._stats.record(key, time.perf_counter() - started, result.completion_tokens)
                return result
        finally:
            self._inflight[key] -= 1
        raise self._all_failed(error) from error

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Send each request to its adapter's replica (concurrently), failing over along the hash order."""
        return list(await asyncio.gather(*(self._generate_one(r) for r in requests)))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        """Stream from the adapter's replica; fails over only before the first delta (never mid-answer)."""
        started = time.perf_counter()
        key = self._stats_key(request)
        error: EngineUnavailable | None = None
        for url in self.order(self._key(request)):
            deltas: AsyncGenerator[StreamDelta, None] = self.engines[url].stream(request)  # type: ignore[assignment]
            try:
                first = await anext(deltas)
            except StopAsyncIteration:
                self._mark_up(url)
                return
            except EngineUnavailable as exc:
                await deltas.aclose()
                self._mark_down(url, exc)
                error = exc
                continue
            self._mark_up(url)
            tokens = 0
            self._inflight[key] += 1
            try:
                yield first
                tokens += first.completion_tokens or 0
                async for delta in deltas:
                    tokens += delta.completion_tokens or 0
                    yield delta
            finally:
                self._inflight[key] -= 1
                await deltas.aclose()
            self._stats.record(key, time.perf_counter() - started, tokens)
            return
        raise self._all_failed(error) from error

    # ---- status ------------------------------------------------------------------------------
    def loaded(self) -> list[str]:
        """Adapters registered on any replica (each once), least recent first per replica."""
        seen: dict[str, None] = {}
        for engine in self.engines.values():
            seen.update(dict.fromkeys(engine.loaded()))
        return list(seen)

    async def replica_health(self) -> list[dict[str, Any]]:
        """Per replica: url, ok, detail, loaded adapters, requests served and failovers away from it."""
        checks = await asyncio.gather(*(e.health() for e in self.engines.values()))
        out = []
        for (url, engine), health in zip(self.engines.items(), checks, strict=True):
            state = self.state[url]
            if health.ok and state.down_since is not None:
                state.down_since = None  # it answers again: back in its place of the hash order
            elif not health.ok:  # found down: tried last from now on, as after a failed request
                state.down_since = state.down_since or time.monotonic()
                state.last_error = health.detail
            out.append({"url": url, "ok": health.ok, "detail": health.detail, "loaded": engine.loaded(),
                        "served": state.served, "failovers": state.failovers})
        return out

    async def health(self) -> EngineHealth:
        """OK while at least one replica serves; the detail names the replicas that are down."""
        replicas = await self.replica_health()
        up = [r for r in replicas if r["ok"]]
        down = "; ".join(f"{r['url']}: {r['detail']}" for r in replicas if not r["ok"])
        detail = f"{len(up)} of {len(replicas)} vLLM replicas up" + (f"; down: {down}" if down else "")
        return EngineHealth(ok=bool(up), detail=detail, replicas=replicas)

    def stats(self) -> EngineStats:
        """Totals over the replicas, and one row per replica (`replicas`) for the dashboard."""
        rows = []
        for url, engine in self.engines.items():
            state = self.state[url]
            rows.append({"url": url, "ok": state.down_since is None, "detail": state.last_error,
                         "loaded": engine.loaded(), "slots": engine.slots, "served": state.served,
                         "failovers": state.failovers})
        return EngineStats(engine=self.name, loaded=self.loaded(), slots=sum(e.slots for e in self.engines.values()),
                           requests_per_adapter=self._stats.snapshot_requests(), latency_ms=self._stats.percentiles(),
                           running=sum(self._inflight.values()), tokens_generated=self._stats.tokens, replicas=rows)
