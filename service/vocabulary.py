"""A repository's vocabulary for repository-vocabulary decoding (`hypernet.decoding`): every name its latest
ingested context knows (`hypernet.metrics.known_identifiers`: definitions, imports, uses, builtins).

Written beside the saved context at ingest (`vocabulary.json` in the workspace), read per request through a small
in-process cache keyed by the file's modification time, so a push is seen by the next request.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.state import ServiceState

FILENAME = "vocabulary.json"
_CACHED = 16
_lock = threading.Lock()
_cache: OrderedDict[tuple[str, int], frozenset[str]] = OrderedDict()


def vocabulary_path(state: ServiceState, repo_id: int) -> Path:
    """Where a repository's vocabulary lives (its workspace)."""
    from service.jobs.workspace import workspace

    return workspace(state, repo_id) / FILENAME


def save_vocabulary(state: ServiceState, repo_id: int, ctx: Any) -> frozenset[str]:
    """Write the names `ctx` knows (sorted JSON list), atomically; returns them."""
    from hypernet.metrics import known_identifiers

    names = frozenset(known_identifiers(ctx))
    _write(vocabulary_path(state, repo_id), names)
    return names


def _write(path: Path, names: frozenset[str]) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(sorted(names)))
    os.replace(tmp, path)


def repo_vocabulary(state: ServiceState, repo_id: int) -> frozenset[str] | None:
    """The repository's vocabulary, or None when it has none yet (never ingested here, or ingested before
    vocabularies were saved and its context is gone)."""
    path = vocabulary_path(state, repo_id)
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return _from_context(state, repo_id)
    key = (str(path), stamp)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    try:
        names = frozenset(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    with _lock:
        _cache[key] = names
        while len(_cache) > _CACHED:
            _cache.popitem(last=False)
    return names


def _from_context(state: ServiceState, repo_id: int) -> frozenset[str] | None:
    """A workspace saved before vocabularies were: build it once from context.json."""
    from hypernet.context import RepoContext
    from service.jobs.workspace import workspace

    try:
        saved = json.loads((workspace(state, repo_id) / "context.json").read_text())
        ctx = RepoContext.from_json(saved["context"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    from hypernet.metrics import known_identifiers

    names = frozenset(known_identifiers(ctx))
    try:
        _write(vocabulary_path(state, repo_id), names)
    except OSError:  # a read-only workspace: serve the names without saving them
        pass
    return names
