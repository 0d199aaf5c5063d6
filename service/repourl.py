"""Repository URLs, names and branches as users give them: checked once, the same rules for REST, the dashboard
and the CLI (`service.gitops` clones what they accept; `service.netguard` decides where git may connect)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

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
