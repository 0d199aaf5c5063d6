"""Where git may connect (issue 21 Medium 4: SSRF and port scans through repository URLs).

Registration refuses a repository whose host is, or resolves to, a loopback, link-local, private, unspecified (or
otherwise non-global) address unless CODE2LORA_ALLOWED_GIT_HOSTS names it; the clone checks again (DNS can change)
and pins git to the checked addresses. Every remote failure gives one message, silent ports fail after a stall
timeout, and one host may run only a bounded number of clones at a time in a process.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlparse

from service.repourl import _SCP_RE, CloneError, NormalizedURL, RepoURLError

log = logging.getLogger(__name__)

# One message for every way a remote clone can fail, so a job error cannot tell a closed port from a TLS error,
# a silent port or a missing repository (the details go to the server log only).
REMOTE_FAILURE = ("could not clone the repository: the host was unreachable, refused or timed out, or the "
                  "repository does not exist or needs credentials")
_DNS_TIMEOUT_S = 5.0
_dns_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="code2lora-dns")


class ForbiddenHost(RepoURLError):
    """The repository host is (or resolves to) an address the service must not connect to."""


def remote_host(url: NormalizedURL) -> tuple[str, int | None] | None:
    """(host, port) git will connect to for an https/ssh url; None for a local file url."""
    if url.kind == "file":
        return None
    if _SCP_RE.match(url.url):
        return url.url.split(":", 1)[0].split("@", 1)[1], None
    try:
        parsed = urlparse(url.url)
        host, port = parsed.hostname, parsed.port
    except ValueError as exc:
        raise RepoURLError("url is malformed") from exc
    if not host:
        raise RepoURLError("url has no host")
    return host, port


def _forbidden(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(addr, "ipv4_mapped", None) or getattr(addr, "sixtofour", None)
    addr = mapped or addr
    return (addr.is_loopback or addr.is_link_local or addr.is_private or addr.is_unspecified or addr.is_multicast
            or addr.is_reserved or not addr.is_global)


def _allowed(host: str, addr: str | None, allowed: Sequence[str]) -> bool:
    """Whether the allow-list names `host` (a name or an address) or a network holding `addr`."""
    for entry in allowed:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == host.lower().strip("[]"):
            return True
        if addr is not None:
            try:
                if ipaddress.ip_address(addr) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def resolve(host: str, port: int | None) -> list[str]:
    """The addresses `host` resolves to (bounded wait); [] when it does not resolve."""
    try:
        return [ipaddress.ip_address(host.strip("[]")).compressed]
    except ValueError:
        pass
    future = _dns_pool.submit(socket.getaddrinfo, host, port or 443, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=_DNS_TIMEOUT_S)
    except (OSError, UnicodeError, FutureTimeout):
        return []
    out: list[str] = []
    for info in infos:
        a = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]).compressed
        if a not in out:
            out.append(a)
    return out


def check_remote_host(url: NormalizedURL, allowed: Sequence[str] = ()) -> list[str]:
    """Refuse an https/ssh url whose host is, or resolves to, a loopback, link-local, private, unspecified (or
    otherwise non-global) address, unless `allowed` (CODE2LORA_ALLOWED_GIT_HOSTS) names the host or a network
    holding the address. Return the checked addresses ([] for a file url, an allow-listed host or a name that
    does not resolve now: the clone checks again, since DNS can change); raise ForbiddenHost."""
    target = remote_host(url)
    if target is None:
        return []
    host, port = target
    if _allowed(host, None, allowed):
        return []
    addrs = resolve(host, port)
    for a in addrs:
        if _forbidden(ipaddress.ip_address(a)) and not _allowed(host, a, allowed):
            raise ForbiddenHost("the repository host is or resolves to a loopback, link-local, private or "
                                "unspecified address; it is refused unless CODE2LORA_ALLOWED_GIT_HOSTS names it")
    return addrs


_host_lock = threading.Lock()
_host_active: dict[str, int] = {}


class HostBusy(RuntimeError):
    """This process already runs the per-host limit of clones from the host: the job goes back to the queue
    (it does not wait holding a job worker)."""


@contextmanager
def host_slot(host: str | None, limit: int) -> Iterator[None]:
    """At most `limit` clones or fetches from one host at a time in this process; over it, HostBusy at once (the
    runner re-queues the job), so one slow or silent host never holds every job worker."""
    if host is None or limit <= 0:
        yield
        return
    key = host.lower()
    with _host_lock:
        if _host_active.get(key, 0) >= limit:
            raise HostBusy(f"{limit} clone(s) from this host already in progress")
        _host_active[key] = _host_active.get(key, 0) + 1
    try:
        yield
    finally:
        with _host_lock:
            _host_active[key] -= 1
            if _host_active[key] <= 0:
                del _host_active[key]


@dataclass(frozen=True)
class RemoteGuard:
    """How git must connect to a checked remote: `-c` options and ssh options that pin the checked addresses
    (git would otherwise resolve the name again, and DNS rebinding could point it elsewhere)."""

    config: tuple[str, ...] = ()
    ssh_options: tuple[str, ...] = ()
    host: str | None = None
    port: int = 443
    addrs: tuple[str, ...] = ()
    stall_s: float = 30.0
    tls: bool = False

    def probe(self) -> None:
        """git's low-speed limit does not cover the TLS handshake: a port that accepts and stays silent would hold
        the job for the whole clone timeout. Shake hands first, within the stall timeout, on a checked address
        (inside the host's clone slot, like the clone)."""
        if self.tls and self.host is not None:
            _probe_tls(self.host, self.port, self.addrs, self.stall_s)


def guard_remote(url: NormalizedURL, allowed: Sequence[str], stall_s: float) -> RemoteGuard:
    """Check the remote again at clone time and build the pinning options; raise CloneError (generic) when the
    host is refused or does not resolve."""
    try:
        target = remote_host(url) if url.kind != "file" else None
    except RepoURLError as exc:
        raise CloneError(REMOTE_FAILURE) from exc
    if target is None:
        return RemoteGuard()
    host, port = target
    stall = max(1, int(stall_s))
    config = ["-c", "http.followRedirects=false",  # a redirect could point at an internal address
              "-c", "http.lowSpeedLimit=1", "-c", f"http.lowSpeedTime={stall}"]  # a silent port fails fast
    ssh = [f"-o ConnectTimeout={stall}", f"-o ServerAliveInterval={max(1, stall // 3)}",
           "-o ServerAliveCountMax=3"]
    try:
        addrs = check_remote_host(url, allowed)
    except ForbiddenHost as exc:
        log.warning("clone refused: host %s is refused (%s)", host, exc)
        raise CloneError(REMOTE_FAILURE) from exc
    if not addrs and not _allowed(host, None, allowed):
        log.warning("clone failed: host %s does not resolve", host)
        raise CloneError(REMOTE_FAILURE)
    if addrs and not _is_ip(host):
        if url.kind == "https":
            pinned = ",".join(f"[{a}]" if ":" in a else a for a in addrs)
            config += ["-c", f"http.curloptResolve={host}:{port or 443}:{pinned}"]
        else:
            ssh += [f"-o HostName={addrs[0]}", f"-o HostKeyAlias={host}"]
    return RemoteGuard(tuple(config), tuple(ssh), host, port or 443, tuple(addrs), stall, url.kind == "https")


def _probe_tls(host: str, port: int, addrs: Sequence[str], stall_s: float) -> None:
    """Connect and complete a TLS handshake within `stall_s` (certificates are git's business); raise CloneError
    with the one generic message otherwise."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    targets = list(addrs) or [host.strip("[]")]
    last: Exception | None = None
    for target in targets:
        try:
            with socket.create_connection((target, port), timeout=stall_s) as raw:
                with ctx.wrap_socket(raw, server_hostname=None if _is_ip(host) else host):
                    return
        except (OSError, ssl.SSLError) as exc:
            last = exc
    log.warning("clone failed: no TLS handshake with %s port %s within %s s (%s)", host, port, stall_s, last)
    raise CloneError(REMOTE_FAILURE)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False
