"""A worker killed in the middle of a job leaves no half version; the job is re-queued and recovers."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.conftest import fresh_rq_env, pg_available, redis_available, start_rq_worker

pytestmark = pytest.mark.skipif(not (pg_available() and redis_available()), reason="PostgreSQL/Redis not reachable")


def test_killed_worker_leaves_no_half_version(tmp_path: Path, sample_repo: Path, service_model_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from hypernet.adapter import read_lora
    from service.bootstrap import build_state
    from service.db.models import AdapterVersion, Job, RepoLock
    from service.repos import register_repo
    from service.settings import Settings

    env = fresh_rq_env(tmp_path, service_model_dir, monkeypatch, CODE2LORA_JOB_LOCK_TTL_S="3")
    state = build_state(Settings())
    try:
        with state.sessions() as s:
            repo, job, _ = register_repo(state, s, str(sample_repo), None, None, "static")
        proc = start_rq_worker(env)
        deadline = time.monotonic() + 300  # 18 s alone; once over 120 s late in a loaded full run
        # kill it once it is past the clone, inside generation: loading the hypernetwork or generating (the first
        # window alone can be shorter than one poll on a loaded machine)
        while time.monotonic() < deadline:
            with state.sessions() as s:
                row = s.get(Job, job.id)
                if row.message and ("hypernetwork" in row.message or "generating the adapter" in row.message):
                    break
                if row.status not in ("queued", "running"):
                    proc.kill()
                    pytest.fail(f"the job ended before it could be killed: {row.status}, {row.message!r}")
            time.sleep(0.02)
        else:
            proc.kill()
            pytest.fail("worker never reached generation")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        with state.sessions() as s:
            assert s.get(Job, job.id).status == "running"
            assert s.query(AdapterVersion).count() == 0
            assert s.get(RepoLock, repo.id) is not None  # held by the dead worker, with expiry
        # nothing half-written: an adapter folder is only ever renamed into place whole (hypernet.adapter)
        artifacts = Path(tmp_path / "d" / "artifacts")
        for folder in (p for p in artifacts.iterdir() if not p.name.startswith(".")) if artifacts.exists() else ():
            read_lora(folder)

        time.sleep(3.5)  # lock and job go stale
        proc = start_rq_worker(env)  # reaps the stale job on start, then runs it
        assert proc.wait(180) == 0
        with state.sessions() as s:
            done = s.get(Job, job.id)
            assert done.status == "succeeded" and done.attempts == 2, done.error
            assert [v.version for v in s.query(AdapterVersion).all()] == [1]
            assert s.get(RepoLock, repo.id) is None
    finally:
        state.close()
