"""Repository URLs cannot be used to reach this network or to scan ports (issue 21, Medium 4).

`https://127.0.0.1:6379/x.git` and `ssh://` equivalents made git connect to Redis and PostgreSQL; job errors told
closed, TLS-error and silent ports apart; a silent port held the only in-process job worker for the whole clone
timeout. Now: loopback, link-local, private and unspecified addresses are refused after resolution (422 at
registration, and again at clone time since DNS can change) unless CODE2LORA_ALLOWED_GIT_HOSTS names them; every
remote failure gives one message; a silent port fails after the stall timeout; jobs run on more than one worker
with a per-host clone limit; registrations are rate limited. Every server here is a loopback socket of the test.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from service.db.models import Job, Repository
from service.netguard import REMOTE_FAILURE
from tests.conftest import make_git_repo, wait_job

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def backend() -> str:
    return "sqlite"


class Listener:
    """A loopback TCP server that records connections; `mode`: silent (accept, say nothing), garbage (send a
    non-TLS banner, as Redis or PostgreSQL would answer), or close (accept and close at once)."""

    def __init__(self, mode: str = "silent") -> None:
        self.mode, self.accepted = mode, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            if self.mode == "garbage":
                conn.sendall(b"-ERR unknown command 'GET'\r\n" * 4)
            if self.mode == "close":
                conn.close()
            else:
                self.conns.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    srv = Listener("silent")
    yield srv
    srv.close()


def _count(client, model) -> int:
    with client.app.state.c2l.sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


INTERNAL = [
    "https://127.0.0.1:{port}/x.git",
    "ssh://git@127.0.0.1:{port}/x.git",
    "git@127.0.0.1:x.git",
    "https://localhost:{port}/x.git",
    "ssh://git@localhost:{port}/x.git",
    "https://[::1]:{port}/x.git",
    "https://[::ffff:127.0.0.1]:{port}/x.git",
    "https://2130706433:{port}/x.git",  # 127.0.0.1 written as one number: resolves to loopback
    "https://0.0.0.0:{port}/x.git",
    "https://169.254.169.254/latest/meta-data.git",
    "https://10.1.2.3/x.git",
    "https://172.16.0.1/x.git",
    "https://192.168.1.1/x.git",
    "https://100.64.0.1/x.git",
    "https://[fd00::1]/x.git",
    "https://[fe80::1]/x.git",
]


@pytest.mark.parametrize("template", INTERNAL)
def test_internal_addresses_refused_at_registration(client_for, listener: Listener, template: str) -> None:
    client = client_for()
    resp = client.post("/repos", json={"url": template.format(port=listener.port)})
    assert resp.status_code == 422, resp.text
    assert "ALLOWED_GIT_HOSTS" in resp.json()["detail"]
    assert _count(client, Repository) == 0 and _count(client, Job) == 0
    time.sleep(0.2)
    assert listener.accepted == 0  # nothing connected to the port


def test_allow_list_names_internal_hosts(client_for, listener: Listener) -> None:
    client = client_for(allowed_git_hosts=["git.internal.test", "127.0.0.0/8"], clone_stall_timeout_s=1)
    for url in (f"https://127.0.0.1:{listener.port}/a.git", f"https://localhost:{listener.port}/b.git"):
        assert client.post("/repos", json={"url": url}).status_code == 202, url
    assert client.post("/repos", json={"url": "https://10.1.2.3/x.git"}).status_code == 422  # not in the list
    # A name on the list is accepted whatever it resolves to (it does not resolve here).
    assert client.post("/repos", json={"url": "https://git.internal.test/o/r.git"}).status_code == 202


def test_dns_change_is_checked_again_at_clone_time(client_for, listener: Listener, monkeypatch) -> None:
    """Public when registered, loopback when cloned (DNS rebinding): the clone is refused before git runs."""
    real = socket.getaddrinfo
    answer = {"addr": "93.184.216.34"}  # a public address at registration time

    def fake(host, port, *args, **kwargs):
        if host == "rebind.example.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer["addr"], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    client = client_for()
    state = client.app.state.c2l
    real_queue, held = state.queue, []

    class Holding:  # holds the job until the name has changed
        def enqueue(self, job_id: str) -> None:
            held.append(job_id)

        def depth(self) -> int:
            return len(held)

        def shutdown(self) -> None:
            real_queue.shutdown()

    state.queue = Holding()
    resp = client.post("/repos", json={"url": f"https://rebind.example.test:{listener.port}/o/r.git"})
    assert resp.status_code == 202, resp.text
    answer["addr"] = "127.0.0.1"
    state.queue = real_queue
    real_queue.enqueue(held.pop())
    job = wait_job(client, resp.json()["job"]["id"], timeout=30)
    assert job["status"] == "failed" and job["error"] == REMOTE_FAILURE
    time.sleep(0.2)
    assert listener.accepted == 0


def test_job_errors_do_not_tell_ports_apart(client_for, tmp_path) -> None:
    """Closed, silent, non-TLS (Redis-like) and missing-repository ports give the same job error; the silent one
    fails after the stall timeout, not the clone timeout."""
    client = client_for(allowed_git_hosts=["127.0.0.1"], clone_stall_timeout_s=2, clone_timeout_s=120)
    silent, garbage, closer = Listener("silent"), Listener("garbage"), Listener("close")
    try:
        errors, took = {}, {}
        for label, port in (("closed", _closed_port()), ("silent", silent.port), ("garbage", garbage.port),
                            ("close", closer.port)):
            for scheme in ("https", "ssh"):
                url = (f"https://127.0.0.1:{port}/o/{label}.git" if scheme == "https"
                       else f"ssh://git@127.0.0.1:{port}/o/{label}.git")
                t0 = time.monotonic()
                resp = client.post("/repos", json={"url": url})
                assert resp.status_code == 202, resp.text
                job = wait_job(client, resp.json()["job"]["id"], timeout=60)
                took[label, scheme] = time.monotonic() - t0
                errors[label, scheme] = job["error"]
                assert job["status"] == "failed"
        assert set(errors.values()) == {REMOTE_FAILURE}, errors
        assert all(t < 30 for t in took.values()), took  # the stall timeout (2 s), not the clone timeout (120 s)
    finally:
        for srv in (silent, garbage, closer):
            srv.close()


def test_silent_host_holds_neither_the_only_worker_nor_more_than_its_limit(client_for, listener: Listener,
                                                                          tmp_path) -> None:
    client = client_for(allowed_git_hosts=["127.0.0.1"], clone_stall_timeout_s=120, clone_timeout_s=120,
                        job_workers=2, max_clones_per_host=1)
    stuck = [client.post("/repos", json={"url": f"https://127.0.0.1:{listener.port}/o/r{i}.git"}).json()["job"]["id"]
             for i in range(3)]
    deadline = time.monotonic() + 20
    while listener.accepted < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listener.accepted == 1
    local = tmp_path / "local"
    make_git_repo(local, {"pkg/a.py": "def local_function():\n    return 1\n"})
    t0 = time.monotonic()
    resp = client.post("/repos", json={"url": str(local)})
    job = wait_job(client, resp.json()["job"]["id"], timeout=90)
    assert job["status"] == "succeeded", job
    assert time.monotonic() - t0 < 90
    # Only one clone from the silent host at a time; the others wait in the queue (re-tried every second), not
    # on a worker: the local job above went through both workers' worth of them.
    seen_waiting: set[str] = set()
    deadline = time.monotonic() + 10
    while len(seen_waiting) < 2 and time.monotonic() < deadline:
        for j in stuck:
            info = client.get(f"/jobs/{j}").json()
            if info["status"] == "queued" and (info["message"] or "").startswith("waiting:"):
                seen_waiting.add(j)
        time.sleep(0.05)
    assert len(seen_waiting) == 2
    assert listener.accepted == 1
    listener.close()  # the silent host goes away: its jobs end with the one message
    for j in stuck:
        assert wait_job(client, j, timeout=60)["error"] == REMOTE_FAILURE


def test_registrations_are_rate_limited(client_for) -> None:
    client = client_for(register_rate_per_min=6, register_burst=3)
    codes = [client.post("/repos", json={"url": "https://10.0.0.1/x.git"}).status_code for _ in range(3)]
    assert codes == [422, 422, 422]  # refused attempts count too
    resp = client.post("/repos", json={"url": "https://10.0.0.1/x.git"})
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
