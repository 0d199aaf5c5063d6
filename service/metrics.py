"""Prometheus metrics shared by the API, cache, jobs and engines."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CACHE_EVENTS = Counter("code2lora_cache_events_total", "Adapter cache events", ["event"])  # hit/miss/put/error
REDIS_DOWN = Counter("code2lora_redis_unavailable_total", "Redis calls that failed and fell back to DB/artifacts")
JOB_DURATION = Histogram("code2lora_job_duration_seconds", "Job wall time", ["kind", "status"])
JOBS_RUNNING = Gauge("code2lora_jobs_running", "Jobs running in this process")
ADAPTER_REQUESTS = Counter("code2lora_adapter_requests_total", "Completion requests per adapter", ["adapter"])
REQUESTS = Counter("code2lora_http_requests_total", "HTTP requests", ["method", "route", "status"])
REQUEST_LATENCY = Histogram("code2lora_http_request_seconds", "HTTP request latency", ["method", "route"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
ADAPTER_LATENCY = Histogram("code2lora_adapter_request_seconds", "Completion latency per adapter", ["adapter"],
                            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
TOKENS_GENERATED = Counter("code2lora_tokens_generated_total", "Completion tokens generated", ["adapter"])
QUEUE_DEPTH = Gauge("code2lora_job_queue_depth", "Jobs waiting in the queue")
ENGINE_LOADED = Gauge("code2lora_engine_adapters_loaded", "Adapters loaded in the engine")
ENGINE_EVENTS = Gauge("code2lora_engine_adapter_events", "Engine adapter loads/evictions (engine counters)", ["event"])
