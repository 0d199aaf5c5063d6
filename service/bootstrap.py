"""The composition root: the one place that builds the service's objects and wires them together.

`build_state` (API and worker) makes the DB, cache and queue and subscribes the engine's hot-loader to activations;
`start_engine` / `stop_engine` run the serving engine inside the API's event loop; `run_job_in_worker` is the RQ
worker's entry point. Nothing below this module imports it.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from service.cache import make_cache
from service.db.session import make_engine as make_db_engine
from service.db.session import make_sessionmaker, upgrade_database
from service.engines.base import Engine
from service.engines.loader import hot_loader, unloader
from service.jobs.base import JobQueue
from service.jobs.queue import InProcessQueue, RQQueue
from service.jobs.runner import run_job
from service.models import base_model_dir, plan_adapters
from service.settings import Settings, get_settings
from service.state import ServiceState

log = logging.getLogger(__name__)


def build_state(settings: Settings, *, start_queue: bool = True, migrate: bool = True) -> ServiceState:
    """Check that the hypernetwork checkpoint fits the base model (ModelMismatch otherwise, unless adapters may be
    switched off), create folders, migrate the DB to head, and wire cache, queue and the engine's hot-loader."""
    plan = plan_adapters(settings)
    if plan.off:
        log.warning("adapters are switched off: %s", plan.off)
    settings.ensure_dirs()
    if migrate:
        upgrade_database(str(settings.database_url))
    db_engine = make_db_engine(str(settings.database_url))
    state = ServiceState(
        settings=settings,
        db_engine=db_engine,
        sessions=make_sessionmaker(db_engine),
        cache=make_cache(settings.redis_url, settings.cache_max_entries, settings.cache_ttl_s),
    )
    state.adapters_off = plan.off
    state.activation_listeners.append(hot_loader(state))
    state.retire_listeners.append(unloader(state))
    state.queue = make_queue(state, start=start_queue)
    return state


def make_queue(state: ServiceState, *, start: bool = True) -> JobQueue:
    """The queue the settings ask for; the in-process one resumes unfinished jobs on start."""
    s = state.settings
    if s.queue == "rq":
        if not s.redis_url:
            raise ValueError("CODE2LORA_QUEUE=rq needs CODE2LORA_REDIS_URL")
        return RQQueue(s.redis_url, job_timeout_s=int(s.job_timeout_s))
    queue = InProcessQueue(state, partial(run_job, state), workers=s.job_workers)
    if start:
        n = queue.resume_unfinished()
        if n:
            log.info("re-queued %d unfinished jobs", n)
    return queue


def make_serving_engine(settings: Settings) -> Engine | None:
    """The configured engine (not started), or None for `engine=none`."""
    if settings.engine == "none":
        return None
    model_dir = base_model_dir(settings)
    if settings.engine == "local":
        from service.engines.local import LocalEngine  # torch: only when this process serves

        return LocalEngine(model_path=str(model_dir), slots=settings.engine_slots)
    from service.engines.replicas import ReplicatedVllmEngine
    from service.engines.vllm import VllmEngine

    key = settings.vllm_api_key.get_secret_value() if settings.vllm_api_key else None
    engines = [VllmEngine(url, max_loras=settings.engine_slots, base_model_path=str(model_dir),
                          zero_adapter_path=str(settings.artifact_dir / "zero-adapter"), api_key=key,
                          resolver_dir=str(settings.artifact_dir) if settings.vllm_lora_resolver else None,
                          timeout=settings.vllm_timeout_s,
                          use_zero_adapter={"auto": None, "zero-adapter": True, "plain": False}[
                              settings.vllm_base_mode])
               for url in settings.vllm_replicas()]
    return engines[0] if len(engines) == 1 else ReplicatedVllmEngine(engines)


async def start_engine(state: ServiceState) -> None:
    """In the API's event loop: remember the loop (job threads drive the engine through it) and start the engine,
    unless the state already has one."""
    state.loop = asyncio.get_running_loop()
    if state.serving_engine is None and state.settings.engine != "none":
        engine = make_serving_engine(state.settings)
        if engine is not None:
            state.serving_engine = engine
            await engine.start()


async def stop_engine(state: ServiceState) -> None:
    """Close the engine `start_engine` started."""
    if state.serving_engine is not None:
        await state.serving_engine.aclose()
        state.serving_engine = None


def run_job_in_worker(job_id: str) -> str:
    """RQ entry point: build (once per worker process) the state from settings and run the job."""
    global _WORKER_STATE
    if _WORKER_STATE is None:
        _WORKER_STATE = build_state(get_settings(), start_queue=False)
    return run_job(_WORKER_STATE, job_id)


_WORKER_STATE: ServiceState | None = None
