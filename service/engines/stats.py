"""Request counters and latency percentiles shared by the engines."""

from __future__ import annotations

import threading
from collections import Counter, deque


class StatsRecorder:
    """Thread-safe per-adapter request counts and a window of recent latencies."""

    def __init__(self, window: int = 1000) -> None:
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=window)
        self.requests: Counter[str] = Counter()
        self.tokens = 0

    def record(self, adapter_id: str, latency_s: float, tokens: int) -> None:
        """Count one finished request."""
        with self._lock:
            self.requests[adapter_id] += 1
            self._latencies.append(latency_s * 1000.0)
            self.tokens += tokens

    def percentiles(self) -> dict[str, float]:
        """p50/p90/p99 of recent request latency in milliseconds (empty when none yet)."""
        with self._lock:
            data = sorted(self._latencies)
        if not data:
            return {}
        pick = lambda q: data[min(len(data) - 1, int(q * len(data)))]
        return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)}

    def snapshot_requests(self) -> dict[str, int]:
        """Copy of the per-adapter request counts."""
        with self._lock:
            return dict(self.requests)
