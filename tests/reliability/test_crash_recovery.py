"""Crash recovery (issue 21, Medium 8): `kill -9` of the API mid-ingest, and of an RQ worker mid-job.

The API test runs the real `code2lora serve` (embedded defaults: SQLite, in-process queue, local engine on the
tiny test model) as a subprocess in its own process group, registers a local repository large enough for the
extraction process pool (forkserver, resource tracker, pool workers), kills the API with SIGKILL while the pool
works, and checks that (1) no process of its group outlives it, (2) a restarted API resumes the job and the job
succeeds (it used to fail with `ImportError: cannot import name 'AutoConfig'`: the resumed job imported
transformers in its thread while the engine imported it on start). The RQ test kills a worker mid-job and
checks that a restarted worker's reaper re-queues the job within seconds (heartbeats), not after the lock TTL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_git_repo
from tests.reliability.conftest import free_port

pytestmark = pytest.mark.timeout(900)  # upper bounds for a starved machine; ~40 s each on an idle one

# Enough files for the extraction process pool (hypernet.context.extract.PARALLEL_MIN_FILES) and enough work
# per file that the pool is still busy when the test kills the API.
N_FILES = 400


def _big_repo(path: Path) -> Path:
    body = "".join(f"class C{{i}}_{k}:\n    def m{k}(self, x):\n        return os.path.join(x, '{k}')\n"
                   for k in range(60))
    make_git_repo(path, {f"pkg{i % 20}/m{i}.py": "import os\n" + body.replace("{i}", str(i))
                         for i in range(N_FILES)})
    return path


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is `pgid`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry))
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def _http(method: str, url: str, body: dict | None = None, timeout: float = 10) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class Server:
    """`code2lora serve` in its own session (process group) with a log file."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "code2lora.cli", "serve", "--port", str(self.port)],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if _http("GET", self.base + "/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("server did not come up:\n" + self.log.read_text()[-3000:])

    def kill_group(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.kill_group()


def _serve_env(tmp_path: Path, model_dir: Path, checkpoint: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODE2LORA_")}
    env.update({"CODE2LORA_DATA_DIR": str(tmp_path / "data"), "CODE2LORA_ALLOW_LOCAL_REPOS": "true",
                "CODE2LORA_ENGINE": "local", "CODE2LORA_BASE_MODEL_PATH": str(model_dir),
                "CODE2LORA_HYPERNET_CHECKPOINT": str(checkpoint), "CODE2LORA_MODEL_CACHE": str(tmp_path / "models"),
                "CODE2LORA_JSON_LOGS": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra})
    return env


def test_kill_9_mid_ingest_leaves_no_orphans_and_the_job_resumes(
        tmp_path: Path, service_model_dir: Path, service_checkpoint: Path, servers: list[Server]) -> None:
    repo = _big_repo(tmp_path / "big")
    env = _serve_env(tmp_path, service_model_dir, service_checkpoint)
    port = free_port()
    first = Server(env, port, tmp_path / "serve1.log")
    servers.append(first)
    first.start()
    assert first.proc is not None
    status, body = _http("POST", first.base + "/repos", {"url": str(repo), "name": "crashy"})
    assert status == 202, body
    job_id = body["job"]["id"]

    # Wait until the extraction pool runs: the forkserver and at least one of its workers (beside the API and the
    # resource tracker).
    pgid = first.proc.pid
    deadline = time.monotonic() + 300
    while sum(b"multiprocessing.forkserver" in _cmdline(p) for p in _group(pgid)) < 2:
        assert time.monotonic() < deadline, f"no extraction pool seen: {_http('GET', first.base + '/jobs/' + job_id)}"
        assert first.proc.poll() is None
        time.sleep(0.02)
    members = _group(pgid)
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)

    # Every child of the dead API exits with it (no forkserver, tracker or pool worker left behind).
    deadline = time.monotonic() + 20
    while _group(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _group(pgid)
    cmdlines = {p: _cmdline(p)[:120] for p in left}
    assert not left, f"orphans of the killed API ({len(members)} processes in its group before): {cmdlines}"

    # A restarted API resumes the job, and the job succeeds.
    second = Server(env, port, tmp_path / "serve2.log")
    servers.append(second)
    second.start()
    deadline = time.monotonic() + 480
    while True:
        status, job = _http("GET", f"{second.base}/jobs/{job_id}")
        assert status == 200, job
        if job["status"] in ("succeeded", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    log = (tmp_path / "serve2.log").read_text()
    assert job["status"] == "succeeded", (job, log[-4000:])
    assert job["attempts"] == 2 and job["error"] is None
    status, repo_row = _http("GET", f"{second.base}/repos/crashy")
    assert status == 200 and repo_row["status"] == "ready" and repo_row["active_version"] == 1, repo_row
    assert "ImportError" not in log
    print(f"killed with {len(members)} processes in the API's group; none left; the resumed job succeeded")


def test_rq_worker_killed_mid_job_is_reaped_by_heartbeat_not_lock_ttl(
        tmp_path: Path, service_model_dir: Path, service_checkpoint: Path, throwaway_redis) -> None:
    """An RQ worker killed mid-job and restarted at once: the job runs again within seconds and succeeds."""
    from tests.conftest import start_rq_worker  # noqa: F401 - the same entry point, run here without --burst

    if shutil.which("git") is None:
        pytest.skip("git not installed")
    repo = _big_repo(tmp_path / "big")
    env = _serve_env(tmp_path, service_model_dir, service_checkpoint, CODE2LORA_QUEUE="rq",
                     CODE2LORA_REDIS_URL=throwaway_redis.url, CODE2LORA_ENGINE="none",
                     CODE2LORA_JOB_HEARTBEAT_S="1")
    # Register through the library (no API process needed): the job goes to RQ.
    from service.bootstrap import build_state
    from service.db.models import Job
    from service.repos import register_repo
    from service.settings import Settings

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", redis_url=throwaway_redis.url, queue="rq",
                        engine="none", allow_local_repos=True, base_model_path=service_model_dir,
                        hypernet_checkpoint=service_checkpoint, job_heartbeat_s=1)
    state = build_state(settings, start_queue=False)
    procs: list[subprocess.Popen] = []
    try:
        with state.sessions() as s:
            _, job, _ = register_repo(state, s, str(repo), None, "crashy", "static")
        job_id = job.id

        def worker() -> subprocess.Popen:
            p = subprocess.Popen([sys.executable, "-m", "code2lora.cli", "worker"], env=env,
                                 stdout=(tmp_path / "worker.log").open("ab"), stderr=subprocess.STDOUT,
                                 start_new_session=True)
            procs.append(p)
            return p

        def job_row() -> Job:
            with state.sessions() as s:
                row = s.get(Job, job_id)
                assert row is not None
                return row

        first = worker()
        deadline = time.monotonic() + 300
        while not (job_row().status == "running" and job_row().progress >= 0.3):
            assert job_row().status != "failed", job_row().error
            assert time.monotonic() < deadline, (job_row().status, (tmp_path / "worker.log").read_text()[-3000:])
            assert first.poll() is None
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        killed_at = time.monotonic()
        assert job_row().status == "running"  # what the dead worker left behind

        worker()  # restarted at once
        deadline = time.monotonic() + 480
        requeued_after = None
        while job_row().status not in ("succeeded", "failed") and time.monotonic() < deadline:
            if requeued_after is None and job_row().attempts >= 2:
                requeued_after = time.monotonic() - killed_at
            time.sleep(0.25)
        row = job_row()
        assert row.status == "succeeded", (row.status, row.error, (tmp_path / "worker.log").read_text()[-4000:])
        assert row.attempts == 2
        # picked up again after the heartbeat went stale (6 s here, plus the new worker's start), not after the
        # 900 s lock TTL; the bound is loose for a starved machine
        assert requeued_after is not None and requeued_after < settings.job_lock_ttl_s / 3, requeued_after
        print(f"killed worker's job running again after {requeued_after:.1f} s")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(10)
        state.close()
