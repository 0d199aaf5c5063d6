"""Safe cloning with gitpython: allowed transports only, a timeout and a size limit."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

import git

from service.netguard import REMOTE_FAILURE, guard_remote, host_slot
from service.repourl import CloneError, NormalizedURL

log = logging.getLogger(__name__)

def _git_env(kind: str, ssh_options: Sequence[str] = ()) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GIT_TERMINAL_PROMPT="0",
        # Only the transports we accept; file only for a file url. Blocks ext::/fd:: at git's level too.
        GIT_ALLOW_PROTOCOL="https:ssh" + (":file" if kind == "file" else ""),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_SSH_COMMAND=" ".join(["ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new", *ssh_options]),
    )
    return env


def dir_size(path: Path) -> int:
    """Bytes on disk under `path`, without following symlinks."""
    total = 0
    for root, _dirs, files in os.walk(path, followlinks=False):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _git_message(exc: git.GitCommandError, *hidden: Path) -> str:
    """git's own message for a user: without its progress lines and without our internal paths."""
    text = (exc.stderr or "").strip().replace("stderr: ", "").strip("'\" \n")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(("Cloning into", "From "))]
    text = "\n".join(lines)
    for path in hidden:
        text = text.replace(str(path), "<checkout>")
    return text or f"git exited with status {exc.status}"


def _remote_failure(url: NormalizedURL, what: str, detail: str) -> CloneError:
    """One message for every failure of a remote (closed, refused, TLS error, silent, missing, private): the
    details only reach the server log, so a job error cannot be used to scan ports (issue 21 Medium 4)."""
    log.warning("%s failed for a %s remote: %s", what, url.kind, detail)
    return CloneError(REMOTE_FAILURE)


def tree_size(repo_dir: Path, rev: str, *, max_bytes: int, env: dict[str, str], timeout_s: float) -> int:
    """The bytes a checkout of `rev` would write (the sum of its blob sizes, read from the object store with
    `git ls-tree -r -l`, so a git bomb is measured before anything is written); raise CloneError over
    `max_bytes` (stops reading at the limit)."""
    import subprocess

    proc = subprocess.Popen(["git", "-C", str(repo_dir), "ls-tree", "-r", "-l", "-z", "--", rev], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    total, buf = 0, b""
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        while True:
            chunk = proc.stdout.read(1 << 16)
            if not chunk:
                break
            *entries, buf = (buf + chunk).split(b"\0")
            for entry in entries:
                meta = entry.split(b"\t", 1)[0].split()
                if len(meta) == 4 and meta[1] == b"blob" and meta[3].isdigit():
                    total += int(meta[3])
            if total > max_bytes:
                proc.kill()
                raise CloneError(f"repository checkout would be over {total / 1e6:.1f} MB, over the "
                                 f"{max_bytes / 1e6:.1f} MB limit")
        if proc.wait() != 0:
            raise CloneError("could not list the repository's files (git ls-tree failed or timed out)")
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return total


def clone(url: NormalizedURL, dest: Path, *, branch: str | None, timeout_s: float, max_bytes: int,
          allowed_hosts: Sequence[str] = (), stall_s: float = 30.0, host_limit: int = 0) -> str:
    """Shallow-clone `url` into `dest` (atomically: temp dir + rename) and return the HEAD commit SHA.

    A remote's host is checked again and pinned (`service.netguard`), at most `host_limit` clones per host run
    at once (HostBusy beyond), and the checkout's size is measured before it is written."""
    dest = Path(dest)
    guard = guard_remote(url, allowed_hosts, min(stall_s, timeout_s))
    tmp = dest.parent / f".tmp-{uuid.uuid4().hex}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    env = _git_env(url.kind, guard.ssh_options)
    args = ["git", "-c", "protocol.ext.allow=never", *guard.config, "clone", "--depth", "1", "--single-branch",
            "--no-tags", "--no-checkout"]
    if branch:
        args += ["--branch", branch]
    args += ["--", url.url, str(tmp)]
    with host_slot(guard.host, host_limit):
        guard.probe()
        try:
            git.Git().execute(args, env=env, kill_after_timeout=timeout_s, with_extended_output=False)
        except git.GitCommandError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            # The user sees their URL and git's message, never our workspace paths or the command line.
            detail = _git_message(exc, tmp, dest)
            if url.kind != "file":
                raise _remote_failure(url, "clone", detail) from exc
            if exc.status in (-9, 9, -15) or "Timeout" in str(exc) or "timeout" in detail.lower():
                raise CloneError(f"clone timed out after {timeout_s:g} s") from exc
            raise CloneError(f"git clone failed for {url.url}: {detail}") from exc
        except Exception as exc:  # noqa: BLE001 - gitpython raises several types; report them all the same way
            shutil.rmtree(tmp, ignore_errors=True)
            if url.kind != "file":
                raise _remote_failure(url, "clone", type(exc).__name__) from exc
            raise CloneError(f"git clone failed for {url.url}: {type(exc).__name__}") from exc
    try:
        size = dir_size(tmp)  # the downloaded objects
        if size > max_bytes:
            raise CloneError(f"repository is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB limit")
        tree_size(tmp, "HEAD", max_bytes=max_bytes - size, env=env, timeout_s=timeout_s)
        git.Git(tmp).execute(["git", "checkout", "--force", "HEAD", "--", "."], env=env,
                             kill_after_timeout=timeout_s)
        sha = git.Repo(tmp).head.commit.hexsha
    except CloneError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:  # noqa: BLE001 - an empty or broken HEAD after the clone
        shutil.rmtree(tmp, ignore_errors=True)
        raise CloneError(f"checkout failed: {type(exc).__name__}") from exc
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return sha


def fetch_and_checkout(url: NormalizedURL, checkout: Path, *, branch: str | None, timeout_s: float,
                       max_bytes: int, allowed_hosts: Sequence[str] = (), stall_s: float = 30.0,
                       host_limit: int = 0) -> tuple[str, str]:
    """Fetch the branch head into an existing clone and check it out; return (old_sha, new_sha).

    The previous commit stays in the object store, so a diff between the two works even after a
    force push or with a shallow clone. The host is checked and pinned as for `clone`, and the new tree's size
    is measured before the checkout writes it.
    """
    guard = guard_remote(url, allowed_hosts, min(stall_s, timeout_s))
    repo = git.Repo(checkout)
    old = repo.head.commit.hexsha
    ref = branch or "HEAD"
    env = _git_env(url.kind, guard.ssh_options)
    with host_slot(guard.host, host_limit):
        guard.probe()
        try:
            repo.git.execute(["git", "-c", "protocol.ext.allow=never", *guard.config, "fetch", "--depth", "1",
                              "--no-tags", "--", url.url, ref], env=env, kill_after_timeout=timeout_s)
        except git.GitCommandError as exc:
            detail = _git_message(exc, checkout)
            if url.kind != "file":
                raise _remote_failure(url, "fetch", detail) from exc
            if exc.status in (-9, 9, -15):
                raise CloneError(f"fetch timed out after {timeout_s:g} s") from exc
            raise CloneError(f"git fetch failed for {url.url}: {detail}") from exc
    try:
        new = repo.git.execute(["git", "rev-parse", "FETCH_HEAD"], env=env).strip()
        git_dir = dir_size(checkout / ".git")
        tree_size(checkout, new, max_bytes=max_bytes - git_dir, env=env, timeout_s=timeout_s)
        repo.git.execute(["git", "checkout", "--force", "--detach", new], env=env)
        repo.git.execute(["git", "clean", "-ffdx"], env=env)
    except git.GitCommandError as exc:
        raise CloneError(f"checkout after the fetch failed: {_git_message(exc, checkout)}") from exc
    size = dir_size(checkout)
    if size > max_bytes:
        raise CloneError(f"repository is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB limit")
    return old, new
