"""The service's shared objects: settings, DB, cache, queue, engine. A plain container; `service.bootstrap` builds it."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine as DBEngine
from sqlalchemy.orm import Session, sessionmaker

from service.cache import AdapterCache
from service.settings import Settings

if TYPE_CHECKING:
    from hypernet.generator import AdapterGenerator
    from service.engines.base import Engine
    from service.jobs.base import JobQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Activation:
    """A repository's active version changed (announced by `service.store.activate` after the commit)."""

    repository_id: int
    name: str | None  # engine-side name of the new active version (`repo@vN+<digest>`); None: no active version
    path: str | None  # its artifact folder
    previous: str | None  # engine-side name of the version it replaces


@dataclass
class ServiceState:
    """Everything a request handler or a job needs; the API and the worker build the same one."""

    settings: Settings
    db_engine: DBEngine
    sessions: sessionmaker[Session]
    cache: AdapterCache
    queue: JobQueue | None = None  # set by service.bootstrap.build_state
    serving_engine: Engine | None = None  # started by the API (service.bootstrap.start_engine); None in a worker
    loop: asyncio.AbstractEventLoop | None = None  # the API's event loop, so job threads can drive the engine
    # Subscribers to activations (the engine's hot-loader, service.engines.loader); called from the committing thread.
    activation_listeners: list[Callable[[Activation], None]] = field(default_factory=list)
    # Subscribers to retirements: engine-side names of deleted versions, to unload (service.engines.loader).
    retire_listeners: list[Callable[[list[str]], None]] = field(default_factory=list)
    # One job at a time runs the hypernetwork, scoring or refinement in a process (jobs share the loaded models);
    # clones and fetches run outside it, so several in-process workers wait on the network in parallel.
    compute_lock: threading.Lock = field(default_factory=threading.Lock)
    # The last contexts this process saved, per repository: (commit, context) (service.jobs.workspace).
    recent_contexts: OrderedDict[int, tuple[str, Any]] = field(default_factory=OrderedDict)
    scoring: Any = None  # service.evaluation.ScoringModel, made on first use
    # Why adapters are switched off (the checkpoint does not fit the base model and CODE2LORA_ALLOW_ADAPTERS_OFF is
    # set; service.models.plan_adapters); None when they are on.
    adapters_off: str | None = None
    _generator: AdapterGenerator | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def generator(self) -> AdapterGenerator:
        """The adapter generator (hypernet + encoder), loaded on first use and shared by jobs."""
        with self._lock:
            if self._generator is None:
                from service.models import load_generator

                self._generator = load_generator(self.settings)
            return self._generator

    def announce(self, event: Activation) -> None:
        """Tell every subscriber that a repository's active version changed (best effort for each)."""
        for listener in list(self.activation_listeners):
            try:
                listener(event)
            except Exception as exc:  # noqa: BLE001 - a subscriber's failure must not undo a committed activation
                log.warning("activation listener failed for repository %s: %s", event.repository_id, exc)

    def retire(self, names: list[str]) -> None:
        """Tell every subscriber that these engine-side names belong to deleted versions (best effort for each)."""
        if not names:
            return
        for listener in list(self.retire_listeners):
            try:
                listener(list(names))
            except Exception as exc:  # noqa: BLE001 - the deletion is committed; an engine keeps a harmless name
                log.warning("retire listener failed for %s: %s", names, exc)

    def close(self) -> None:
        """Stop the queue and engine and release DB connections."""
        if self.queue is not None:
            self.queue.shutdown()
        if self.serving_engine is not None and hasattr(self.serving_engine, "close"):
            self.serving_engine.close()
        self.db_engine.dispose()
