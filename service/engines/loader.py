"""The engine side of an activation: hot-load the new active version and drop the old one.

`service.store.activate` announces each activation; `hot_loader(state)` is the subscriber `service.bootstrap`
registers. Deleting versions (a repository, one version, a prune) announces their engine-side names to
`unloader(state)`, which unloads them. Jobs never call the engine themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.state import Activation, ServiceState

log = logging.getLogger(__name__)


def hot_loader(state: ServiceState) -> Callable[[Activation], None]:
    """A subscriber that, from a job or request thread, loads the new active version into this process's engine and
    unloads the previous one.

    The engine defers an unload until the rows using that adapter finish, so in-flight requests end on the version
    they started with. Without an engine in this process (an RQ worker), the API hot-loads the new name on first use
    and the LRU evicts the old one.
    """

    def on_activated(event: Activation) -> None:
        engine, loop = state.serving_engine, state.loop
        if engine is None or loop is None or loop.is_closed():
            return

        async def _swap() -> None:
            if event.name is not None and event.path is not None:
                await engine.ensure_loaded(event.name, event.path)
            if event.previous is not None and event.previous != event.name:
                await engine.unload(event.previous)

        try:
            asyncio.run_coroutine_threadsafe(_swap(), loop).result(timeout=60)
        except Exception as exc:  # noqa: BLE001 - serving falls back to hot-loading on first use
            log.warning("adapter swap failed (%s); it will hot-load on first use", exc)

    return on_activated


def unloader(state: ServiceState) -> Callable[[list[str]], None]:
    """A subscriber that unloads the engine-side names of deleted versions from this process's engine.

    Names are unique to an artifact (`service.store.engine_name`), so a name left in another process's engine can
    never be served for other bytes; unloading frees its slot and drops an adapter whose folder may be gone.
    """

    def on_retired(names: list[str]) -> None:
        engine, loop = state.serving_engine, state.loop
        if engine is None or loop is None or loop.is_closed():
            return

        async def _unload() -> None:
            loaded = set(engine.loaded())
            for name in names:
                if name in loaded:
                    await engine.unload(name)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:  # called on the engine's own loop: never block it
            loop.create_task(_unload())
            return
        try:
            asyncio.run_coroutine_threadsafe(_unload(), loop).result(timeout=60)
        except Exception as exc:  # noqa: BLE001 - the LRU evicts it later
            log.warning("unloading deleted adapters %s failed: %s", names, exc)

    return on_retired
