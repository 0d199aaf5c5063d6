"""Safe cloning with gitpython: allowed transports only, a timeout and a size limit."""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import git

log = logging.getLogger(__name__)

# scp-like ssh syntax: user@host:path (no scheme, no "::" helper syntax).
_SCP_RE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:(?!/?/)[^\s]+$")


class RepoURLError(ValueError):
    """The repository URL is malformed or uses a transport we refuse."""


class InvalidRepoField(RepoURLError):
    """A repository name or branch that registration refuses (same rules for REST, the dashboard and the CLI)."""


_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_BRANCH_RE = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")


def check_repo_name(name: str | None) -> None:
    """Names are letters, digits, `.`, `_`, `-`: no `@` (it would shadow `<repo>@vN`), not all digits (it would
    shadow a repository id), no leading `-` or `.`; raise InvalidRepoField."""
    if name is None:
        return
    if not _NAME_RE.match(name) or name[0] in "-." or name.isdigit():
        raise InvalidRepoField("name must be 1-100 letters, digits, '.', '_' or '-', not start with '-' or '.', "
                               "and not be all digits")


def check_branch(branch: str | None) -> None:
    """Branch names: letters, digits, `.`, `_`, `/`, `-`, not starting with `-` (git option injection)."""
    if branch is None:
        return
    if not _BRANCH_RE.match(branch) or branch[0] in "-/" or ".." in branch:
        raise InvalidRepoField("branch must be 1-255 letters, digits, '.', '_', '/' or '-', not start with '-' "
                               "or '/', and not contain '..'")


def _refuse_options(*parts: str | None) -> None:
    for part in parts:
        if part and part.startswith("-"):
            raise RepoURLError("a host or user name must not start with '-' (option injection)")


class CloneError(RuntimeError):
    """Cloning failed (unreachable, missing branch, timeout, too large)."""


@dataclass(frozen=True)
class NormalizedURL:
    """A checked repository location: `url` is what git receives, `kind` is https/ssh/file."""

    url: str
    kind: str


def normalize_repo_url(raw: str, *, allow_local: bool) -> NormalizedURL:
    """Check a user-given repository URL and return what git should clone; raise RepoURLError."""
    url = raw.strip()
    if not url:
        raise RepoURLError("url is empty")
    if any(c in url for c in "\n\r\t\0") or " " in url:
        raise RepoURLError("url contains whitespace or control characters")
    if not url.isprintable() or any("\ud800" <= c <= "\udfff" for c in url):
        raise RepoURLError("url contains invalid characters (control characters or lone surrogates)")
    if url.startswith("-"):
        raise RepoURLError("url must not start with '-' (option injection)")
    if "::" in url.split("/", 1)[0] or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*::", url):
        raise RepoURLError("git remote helpers (such as ext:: or fd::) are not allowed")
    if _SCP_RE.match(url):
        user, host = url.split(":", 1)[0].split("@", 1)
        _refuse_options(user, host)
        if "?" in url or "#" in url:
            raise RepoURLError("a query string or fragment is not accepted in a repository url")
        return NormalizedURL(url, "ssh")
    try:
        parsed = urlparse(url)
        hostname, username, password = parsed.hostname, parsed.username, parsed.password
        parsed.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise RepoURLError("url is malformed") from exc
    scheme = parsed.scheme.lower()
    if scheme in ("https", "ssh"):
        if not hostname:
            raise RepoURLError(f"{scheme} url has no host")
        # Never stored, never echoed: the message does not repeat the url.
        if password is not None or (scheme == "https" and username):
            raise RepoURLError("credentials in the url are not accepted (use a deploy key or a credential helper)")
        if parsed.query or parsed.fragment or parsed.params or ";" in parsed.path:
            raise RepoURLError("a query string or fragment is not accepted in a repository url (tokens such as "
                               "?private_token= or ?access_token= are credentials)")
        _refuse_options(username, hostname, parsed.netloc.rsplit("@", 1)[-1])
    if scheme == "https":
        if not parsed.path or parsed.path == "/":
            raise RepoURLError("https url has no repository path")
        return NormalizedURL(url, "https")
    if scheme == "ssh":
        return NormalizedURL(url, "ssh")
    if scheme == "file" or (scheme == "" and (url.startswith("/") or url.startswith("."))):
        if not allow_local:
            raise RepoURLError("local paths and file:// urls are disabled (set CODE2LORA_ALLOW_LOCAL_REPOS=true)")
        path = Path(parsed.path if scheme == "file" else url).expanduser().resolve()
        return NormalizedURL(path.as_uri(), "file")
    if scheme in ("http", "git", "ftp", "ftps", "rsync"):
        raise RepoURLError(f"transport '{scheme}' is not allowed; use https, ssh or file")
    raise RepoURLError("url must be an https://, ssh:// or git@host:path url" + (" or a local path" if allow_local else ""))


def repo_name_from_url(url: str) -> str:
    """A readable default name: the last path component without `.git`."""
    tail = url.rstrip("/").replace(":", "/").rsplit("/", 1)[-1]
    name = tail[:-4] if tail.endswith(".git") else tail
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "repo"
    if name.isdigit():  # an all-digit name would shadow a repository id
        name = f"repo-{name}"
    return name[:100]


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
    from service.netguard import REMOTE_FAILURE

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
    from service.netguard import guard_remote, host_slot

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
    from service.netguard import guard_remote, host_slot

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
