"""Prometheus metrics shared by the API, cache, jobs and engines."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CACHE_EVENTS = Counter("code2lora_cache_events_total", "Adapter cache events", ["event"])  # hit/miss/put/error
REDIS_DOWN = Counter("code2lora_redis_unavailable_total", "Redis calls that failed and fell back to DB/artifacts")
JOB_DURATION = Histogram("code2lora_job_duration_seconds", "Job wall time", ["kind", "status"])
JOBS_RUNNING = Gauge("code2lora_jobs_running", "Jobs running in this process")
ADAPTER_REQUESTS = Counter("code2lora_adapter_requests_total", "Completion requests per adapter", ["adapter"])
