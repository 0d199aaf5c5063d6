"""The service's shared objects (settings, DB, cache, queue, engine), built once per process."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.cache import AdapterCache, make_cache
from service.db.session import make_engine, make_sessionmaker, upgrade_database
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    """Everything a request handler or a job needs; the API and the worker build the same one."""

    settings: Settings
    db_engine: Engine
    sessions: sessionmaker[Session]
    cache: AdapterCache
    queue: Any = None  # service.jobs.queue.JobQueue, set by build_state
    serving_engine: Any = None  # service.engines Engine, created lazily
    loop: Any = None  # the API's event loop, so job threads can drive the async engine
    _generator: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def generator(self) -> Any:
        """The adapter generator (hypernet + encoder), loaded on first use and shared by jobs."""
        with self._lock:
            if self._generator is None:
                from service.adapters import load_generator

                self._generator = load_generator(self.settings)
            return self._generator

    def swap_adapter(self, load: tuple[str, str] | None, unload: str | None) -> None:
        """Best effort, from a job thread: load the new active version and drop the old one.

        The engine defers an unload until the rows using that adapter finish, so in-flight requests
        end on the version they started with. Without an engine in this process (an RQ worker), the
        API hot-loads the new name on first use and the LRU evicts the old one.
        """
        import asyncio

        engine, loop = self.serving_engine, self.loop
        if engine is None or loop is None or loop.is_closed():
            return

        async def _swap() -> None:
            if load is not None:
                await engine.ensure_loaded(*load)
            if unload is not None and unload != (load[0] if load else None):
                await engine.unload(unload)

        try:
            asyncio.run_coroutine_threadsafe(_swap(), loop).result(timeout=60)
        except Exception as exc:  # noqa: BLE001 - serving falls back to hot-loading on first use
            log.warning("adapter swap failed (%s); it will hot-load on first use", exc)

    def close(self) -> None:
        """Stop the queue and engine and release DB connections."""
        if self.queue is not None:
            self.queue.shutdown()
        if self.serving_engine is not None and hasattr(self.serving_engine, "close"):
            self.serving_engine.close()
        self.db_engine.dispose()


def build_state(settings: Settings, *, start_queue: bool = True, migrate: bool = True) -> ServiceState:
    """Create folders, migrate the DB to head, and wire cache and queue from the settings."""
    from service.jobs.queue import make_queue

    settings.ensure_dirs()
    if migrate:
        upgrade_database(str(settings.database_url))
    db_engine = make_engine(str(settings.database_url))
    state = ServiceState(
        settings=settings,
        db_engine=db_engine,
        sessions=make_sessionmaker(db_engine),
        cache=make_cache(settings.redis_url, settings.cache_max_entries, settings.cache_ttl_s),
    )
    state.queue = make_queue(state, start=start_queue)
    return state
