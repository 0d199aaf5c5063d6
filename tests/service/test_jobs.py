"""Job execution: the RQ worker path on real Redis, and resuming unfinished in-process jobs."""

from __future__ import annotations

from pathlib import Path

import git
import pytest

from service import bootstrap
from service.bootstrap import build_state
from service.db.models import Job, Repository
from service.jobs import runner
from tests.conftest import PG_URL, REDIS_URL, pg_available, redis_available, reset_postgres, reset_redis


@pytest.mark.skipif(not (pg_available() and redis_available()), reason="PostgreSQL/Redis not reachable")
def test_rq_worker_runs_ingest(tmp_path: Path, sample_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis
    import rq

    from service.jobs.queue import RQ_QUEUE_NAME
    from service.repos import register_repo
    from service.settings import Settings, get_settings

    reset_postgres(PG_URL)
    reset_redis(REDIS_URL)
    env = {"CODE2LORA_DATA_DIR": str(tmp_path / "d"), "CODE2LORA_DATABASE_URL": PG_URL,
           "CODE2LORA_REDIS_URL": REDIS_URL, "CODE2LORA_QUEUE": "rq", "CODE2LORA_ALLOW_LOCAL_REPOS": "true",
           "CODE2LORA_ENGINE": "none"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    monkeypatch.setattr(bootstrap, "_WORKER_STATE", None)
    state = build_state(Settings())
    try:
        with state.sessions() as s:
            repo, job, _ = register_repo(state, s, str(sample_repo), None, None, "static")
        assert state.queue.depth() == 1
        conn = redis.Redis.from_url(REDIS_URL)
        rq.SimpleWorker([rq.Queue(RQ_QUEUE_NAME, connection=conn)], connection=conn).work(burst=True)
        with state.sessions() as s:
            ran = s.get(Job, job.id)
            assert ran.status in ("succeeded", "failed") and ran.attempts == 1
            assert s.get(Repository, repo.id).last_commit == git.Repo(sample_repo).head.commit.hexsha
        assert state.queue.depth() == 0
    finally:
        state.close()
        if bootstrap._WORKER_STATE is not None:
            bootstrap._WORKER_STATE.close()
        get_settings.cache_clear()


def test_unfinished_jobs_are_resumed_on_start(make_settings, sample_repo: Path) -> None:
    settings = make_settings()
    state = build_state(settings, start_queue=False)
    with state.sessions.begin() as s:
        repo = Repository(name="sample", url=sample_repo.as_uri(), branch="", status="cloning")
        s.add(repo)
        s.flush()
        # as if the previous process died mid-job
        s.add(Job(id="deadbeef", kind="ingest", repository_id=repo.id, status="running", attempts=1))
    state.close()

    import time

    state2 = build_state(settings)  # starting the in-process queue re-queues the job
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with state2.sessions() as s:
            if s.get(Job, "deadbeef").status in ("succeeded", "failed"):
                break
        time.sleep(0.1)
    state2.queue.shutdown()
    with state2.sessions() as s:
        job = s.get(Job, "deadbeef")
        assert job.status in ("succeeded", "failed") and job.attempts == 2
        assert s.get(Repository, job.repository_id).last_commit == git.Repo(sample_repo).head.commit.hexsha
    state2.db_engine.dispose()


def test_job_crash_is_recorded_readably(make_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.jobs import ingest

    def boom(state, job, report):
        report(0.5, "half way")
        raise KeyError("surprise")

    monkeypatch.setattr(ingest, "run_ingest", boom)
    state = build_state(make_settings(), start_queue=False)
    with state.sessions.begin() as s:
        s.add(Job(id="j1", kind="ingest", status="queued"))
    assert runner.run_job(state, "j1") == "failed"
    with state.sessions() as s:
        job = s.get(Job, "j1")
        # the kind of failure and an error id; the message itself stays in the server log (issue 21 Low 13)
        assert job.error.startswith("internal error (KeyError, error id ") and "surprise" not in job.error
        assert job.progress == 0.5 and job.message == "half way"
        assert job.finished_at is not None
    state.close()


@pytest.mark.skipif(not (pg_available() and redis_available()), reason="PostgreSQL/Redis not reachable")
def test_jobs_lost_by_redis_are_requeued(tmp_path: Path) -> None:
    import datetime as dt

    import redis

    from service.db.models import utcnow
    from service.jobs.queue import reap_stale_jobs
    from service.settings import Settings

    reset_postgres(PG_URL)
    reset_redis(REDIS_URL)
    state = build_state(Settings(_env_file=None, data_dir=tmp_path / "d", database_url=PG_URL, redis_url=REDIS_URL,
                                 queue="rq", engine="none"))
    try:
        with state.sessions.begin() as s:
            s.add(Job(id="lost1", kind="ingest", status="queued", created_at=utcnow() - dt.timedelta(minutes=5)))
            s.add(Job(id="fresh1", kind="ingest", status="queued"))  # just created: its enqueue may be in flight
        state.queue.enqueue("kept1")
        assert reap_stale_jobs(state) == ["lost1"]
        assert state.queue.has("lost1") and not state.queue.has("fresh1")
        assert reap_stale_jobs(state) == []  # RQ has it now: not queued twice
    finally:
        state.close()
        redis.Redis.from_url(REDIS_URL).flushdb()
