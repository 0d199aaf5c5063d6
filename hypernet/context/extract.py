"""Per-file extraction: bytes -> FileFacts (or a skip reason), and a parallel batch driver."""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.context
import os
import select
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from hypernet.context.generic_lang import extract_generic
from hypernet.context.languages import language_for
from hypernet.context.model import FileFacts
from hypernet.context.python_lang import extract_python
from hypernet.context.walk import content_skip_reason

# Below this many files a process pool costs more (start-up, pickling) than it saves.
PARALLEL_MIN_FILES = 300


def extract_bytes(path: str, data: bytes) -> FileFacts | str:
    """Facts for one file's content, or the reason it is skipped (binary, generated)."""
    why = content_skip_reason(data)
    if why:
        return why
    lang = language_for(path) or "unknown"
    facts = FileFacts(
        path=path,
        language=lang,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        lines=data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0),
    )
    try:
        _extract_into(lang, path, data, facts)
    except RecursionError:
        # 800 nested classes overflow the parser or the walk (issue 21 Medium 6): skip the file, not the ingest.
        return "nested too deeply"
    return facts


def _extract_into(lang: str, path: str, data: bytes, facts: FileFacts) -> None:
    if lang == "python":
        extract_python(path, data, facts)
    elif lang == "gomod":
        # go.mod has no tree-sitter grammar installed; its `module` directive is one plain line.
        for line in data.decode("utf-8", "replace").splitlines():
            if line.strip().startswith("module "):
                facts.module = line.split(None, 1)[1].strip().strip('"')
                break
    else:
        extract_generic(lang, path, data, facts)


def extract_path(root: Path, rel: str) -> FileFacts | str:
    """Read and extract one file; unreadable files are skipped, never raised."""
    try:
        data = (root / rel).read_bytes()
    except OSError:
        return "unreadable"
    return extract_bytes(rel, data)


def _chunk(args: tuple[str, list[str]]) -> list[FileFacts | str]:
    root, rels = args
    return [extract_path(Path(root), r) for r in rels]


def _mp_context() -> multiprocessing.context.BaseContext:
    # fork is cheapest, but forking a process that runs threads (a service worker, torch's pools)
    # can deadlock the child; forkserver starts children from a clean single-threaded server.
    if threading.active_count() == 1 and "torch" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver")


def _exit_with(parent: int) -> None:
    """Pool initializer: end this worker as soon as `parent` (the process that made the pool) dies.

    A forkserver worker's parent is the forkserver, which stays while any of its children lives, and a worker
    waiting on its task queue never sees end-of-file (it holds both ends of the pipe): after a `kill -9` of the
    service they used to stay forever, a few more per crash (issue 21 Medium 8)."""

    def watch() -> None:
        try:
            fd = os.pidfd_open(parent)  # Linux 5.3+: readable once the process has exited
        except ProcessLookupError:
            os._exit(1)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                time.sleep(1.0)
                try:
                    os.kill(parent, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    continue
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def extract_many(root: Path, rels: list[str], workers: int | None = None) -> list[FileFacts | str]:
    """Extract files in order; uses a process pool for large batches (tree-sitter holds the GIL)."""
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    if workers <= 1 or len(rels) < PARALLEL_MIN_FILES:
        return [extract_path(root, r) for r in rels]
    # Interleaved chunks balance big and small files across workers.
    n_chunks = workers * 4
    chunks = [rels[i::n_chunks] for i in range(n_chunks)]
    out: list[FileFacts | str | None] = [None] * len(rels)
    with ProcessPoolExecutor(workers, mp_context=_mp_context(), initializer=_exit_with,
                             initargs=(os.getpid(),)) as ex:
        for i, res in enumerate(ex.map(_chunk, [(str(root), c) for c in chunks])):
            for j, r in enumerate(res):
                out[i + j * n_chunks] = r
    return out  # type: ignore[return-value]
