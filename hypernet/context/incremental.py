"""Incremental update: re-extract only the files a git diff touches; result equals a full extraction."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hypernet.context.extract import extract_path
from hypernet.context.model import FileFacts
from hypernet.context.repo import RepoContext, extract_repo
from hypernet.context.walk import Ignores, classify_path, walk

# Reasons decided from file content; a walk cannot reproduce them without reading the file.
_CONTENT_REASONS = frozenset({"binary", "generated", "unreadable"})


@dataclass(frozen=True)
class FileChange:
    """One changed path between two commits. status: A(dded), M(odified), D(eleted), R(enamed)."""

    status: str
    path: str
    old_path: str | None = None


def changes_between(repo_root: Path, old_sha: str, new_sha: str) -> list[FileChange]:
    """Changed files between two commits (renames detected), via gitpython."""
    import git

    repo = git.Repo(repo_root)
    out: list[FileChange] = []
    for d in repo.commit(old_sha).diff(repo.commit(new_sha), M=True):
        ct = d.change_type
        if ct == "A" or ct == "C":
            out.append(FileChange("A", str(d.b_path)))
        elif ct == "D":
            out.append(FileChange("D", str(d.a_path)))
        elif ct == "R":
            out.append(FileChange("R", str(d.b_path), d.a_path))
        else:  # M, T (type change, e.g. file <-> symlink)
            out.append(FileChange("M", str(d.b_path or d.a_path)))
    out.sort(key=lambda c: (c.path, c.status))
    return out


def _touched(changes: list[FileChange]) -> set[str]:
    paths: set[str] = set()
    for c in changes:
        paths.add(c.path)
        if c.old_path:
            paths.add(c.old_path)
    return paths


def update_context(prev: RepoContext, root: Path, changes: list[FileChange]) -> RepoContext:
    """New context for the working tree at `root`, given what changed since `prev` was extracted.

    Only changed paths are read; a changed .gitignore triggers a re-walk that still reuses the facts
    of unchanged files; a context truncated by `max_files` falls back to a full extraction.
    """
    root = Path(root)
    touched = _touched(changes)
    if prev.truncated:
        return extract_repo(root, max_file_bytes=prev.max_file_bytes, max_files=prev.max_files)
    if any(p.rsplit("/", 1)[-1] == ".gitignore" for p in touched):
        ctx = _rewalk(prev, root, touched)
    else:
        ctx = _patch(prev, root, touched)
    if ctx is None:
        return extract_repo(root, max_file_bytes=prev.max_file_bytes, max_files=prev.max_files)
    return ctx


def _patch(prev: RepoContext, root: Path, touched: set[str]) -> RepoContext | None:
    files = dict(prev.files)
    skipped = dict(prev.skipped)
    ignores = Ignores(root)
    for rel in sorted(touched):
        files.pop(rel, None)
        skipped.pop(rel, None)
        # A skipped ancestor directory may have vanished with this change (git drops empty dirs).
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            d = "/".join(parts[:depth])
            for key in (d + "/", d):
                if key in skipped and not os.path.lexists(root / d):
                    del skipped[key]
        key, why = classify_path(root, rel, prev.max_file_bytes, ignores)
        if not key:
            continue
        if why:
            skipped[key] = why
            continue
        res = extract_path(root, rel)
        if isinstance(res, str):
            skipped[rel] = res
        else:
            files[rel] = res
    if len(files) + sum(1 for k, v in skipped.items() if v in _CONTENT_REASONS) > prev.max_files:
        return None
    return RepoContext.build(files, skipped, max_file_bytes=prev.max_file_bytes, max_files=prev.max_files)


def _rewalk(prev: RepoContext, root: Path, touched: set[str]) -> RepoContext | None:
    w = walk(root, prev.max_file_bytes)
    if len(w.files) > prev.max_files:
        return None
    files: dict[str, FileFacts] = {}
    skipped = dict(w.skipped)
    for rel in w.files:
        if rel not in touched and rel in prev.files:
            files[rel] = prev.files[rel]
            continue
        if rel not in touched and prev.skipped.get(rel) in _CONTENT_REASONS:
            skipped[rel] = prev.skipped[rel]
            continue
        res = extract_path(root, rel)
        if isinstance(res, str):
            skipped[rel] = res
        else:
            files[rel] = res
    return RepoContext.build(files, skipped, max_file_bytes=prev.max_file_bytes, max_files=prev.max_files)
