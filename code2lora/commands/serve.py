"""`code2lora serve` and `code2lora worker`: the API process and the RQ job worker."""

from __future__ import annotations

import logging

import typer


def serve(
    host: str = typer.Option(None, help="Bind address (default: CODE2LORA_HOST, 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default: CODE2LORA_PORT, 8000)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Run the API (migrations run on start)."""
    import uvicorn

    from service.api.app import create_app
    from service.observability import configure_logging
    from service.settings import get_settings

    settings = get_settings()
    # The bind address decides whether unauthenticated access is allowed: keep settings truthful.
    settings.host, settings.port = host or settings.host, port or settings.port
    configure_logging(log_level, json_logs=settings.json_logs)
    # uvicorn finishes in-flight requests on SIGTERM (graceful shutdown), then the lifespan stops
    # the queue (running jobs finish; queued ones stay in the DB and resume on the next start).
    # uvicorn trusts X-Forwarded-For from 127.0.0.1 by default: anyone on the machine could then pick the
    # address that rate limits and the audit trail see. Only when configured (behind a real proxy).
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level,
                log_config=None, timeout_graceful_shutdown=settings.shutdown_grace_s,
                proxy_headers=settings.trust_proxy_headers,
                forwarded_allow_ips=settings.forwarded_allow_ips if settings.trust_proxy_headers else None)


def worker(burst: bool = typer.Option(False, help="Exit when the queue is empty.")) -> None:
    """Run an RQ worker for ingest/regenerate jobs (needs CODE2LORA_REDIS_URL)."""
    import redis
    import rq

    from service.jobs.queue import RQ_QUEUE_NAME
    from service.settings import get_settings

    settings = get_settings()
    if not settings.redis_url:
        typer.echo("code2lora worker needs CODE2LORA_REDIS_URL (the embedded default runs jobs in the API).", err=True)
        raise typer.Exit(2)
    import threading

    from service.jobs.queue import reap_periodically, reap_stale_jobs
    from service.observability import configure_logging

    configure_logging("INFO", json_logs=settings.json_logs)
    from service import bootstrap

    state = bootstrap.build_state(settings)
    requeued = reap_stale_jobs(state)
    if requeued:
        logging.getLogger("code2lora.worker").info("re-queued %d jobs left by dead workers", len(requeued))
    stop = threading.Event()
    if not burst:
        # A worker restarted at once after a crash finds its dead run's heartbeat still fresh: keep looking.
        reap_periodically(state, stop)
    bootstrap._WORKER_STATE = state  # run_job_in_worker's state: the jobs share it (one loaded hypernetwork)
    conn = redis.Redis.from_url(settings.redis_url)
    try:
        # SimpleWorker runs jobs in this process, so the hypernetwork is loaded once, not per job.
        rq.SimpleWorker([rq.Queue(RQ_QUEUE_NAME, connection=conn)], connection=conn).work(burst=burst)
    finally:
        stop.set()
        state.close()


def register(app: typer.Typer) -> None:
    """Add `serve` and `worker`."""
    app.command()(serve)
    app.command()(worker)
