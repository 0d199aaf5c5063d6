"""A repository's workspace: its checkout, the context saved per commit, the evolving state."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.state import ServiceState


def workspace(state: ServiceState, repo_id: int) -> Path:
    """A repository's workspace: `checkout/` and the saved `context.json`."""
    return state.settings.workspace_dir / str(repo_id)


def checkout_dir(state: ServiceState, repo_id: int) -> Path:
    """Where a repository's working tree lives."""
    return workspace(state, repo_id) / "checkout"


# The last contexts this process saved, per repository: a push reads its previous context from here instead of
# parsing context.json (about 1 s for 1,000 files). Keyed by commit, so a stale entry is never used.
_RECENT_CONTEXTS = 4
_recent_lock = threading.Lock()


def load_context(state: ServiceState, repo_id: int, commit: str) -> Any | None:
    """The saved context of `commit`, if this process or the workspace has it."""
    from hypernet.context import RepoContext

    with _recent_lock:
        hit = state.recent_contexts.get(repo_id)
    if hit is not None and hit[0] == commit:
        return hit[1]  # contexts are never modified in place (update_context builds a new one)
    path = workspace(state, repo_id) / "context.json"
    try:
        saved = json.loads(path.read_text())
        if saved.get("commit") != commit:
            return None
        return RepoContext.from_json(saved["context"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _plain(obj: Any) -> Any:
    """JSON for the context's dataclasses, field by field (what dataclasses.asdict gives, without its deep copies)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return obj.__dict__
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def save_context(state: ServiceState, repo_id: int, commit: str, ctx: Any) -> None:
    """Write what `RepoContext.from_json` reads (not the analysis, which it recomputes) and remember the context."""
    path = workspace(state, repo_id) / "context.json"
    tmp = path.with_suffix(".tmp")
    data = {"version": ctx.version, "digest": ctx.digest, "max_file_bytes": ctx.max_file_bytes,
            "max_files": ctx.max_files, "truncated": ctx.truncated, "files": dict(sorted(ctx.files.items())),
            "skipped": dict(sorted(ctx.skipped.items()))}
    tmp.write_text(json.dumps({"commit": commit, "context": data}, default=_plain))
    os.replace(tmp, path)
    with _recent_lock:
        recent = state.recent_contexts
        recent[repo_id] = (commit, ctx)
        recent.move_to_end(repo_id)
        while len(recent) > _RECENT_CONTEXTS:
            recent.popitem(last=False)
