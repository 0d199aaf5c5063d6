"""Two worker processes on one PostgreSQL + Redis share the jobs and never work on one repository at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REDIS_URL, fresh_rq_env, make_git_repo, pg_available, redis_available, start_rq_worker

pytestmark = pytest.mark.skipif(not (pg_available() and redis_available()), reason="PostgreSQL/Redis not reachable")


def test_two_workers_share_jobs_without_overlap(tmp_path: Path, service_model_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import redis
    from rq.job import Job as RQJob
    from sqlalchemy import select

    from service.bootstrap import build_state
    from service.db.models import Job
    from service.repos import enqueue_job, register_repo
    from service.settings import Settings

    env = fresh_rq_env(tmp_path, service_model_dir, monkeypatch)
    state = build_state(Settings())
    try:
        with state.sessions() as s:
            repos = []
            for name in ("alpha", "beta"):
                make_git_repo(tmp_path / name, {f"{name}/core.py": f"def {name}_fn(x: int) -> int:\n    return x\n"})
                repo, _, _ = register_repo(state, s, str(tmp_path / name), None, name, "static")
                repos.append(repo)
            for _ in range(2):  # more work on alpha than one worker at a time may do
                enqueue_job(state, s, repos[0], "regenerate", full=True)
        workers = [start_rq_worker(env) for _ in range(2)]
        assert [w.wait(300) for w in workers] == [0, 0]
        conn = redis.Redis.from_url(REDIS_URL)
        with state.sessions() as s:
            jobs = s.scalars(select(Job).order_by(Job.created_at)).all()
            assert len(jobs) == 4 and all(j.status == "succeeded" for j in jobs), [(j.status, j.error) for j in jobs]
            ran_by = {RQJob.fetch(f"c2l-{j.id}", connection=conn).worker_name for j in jobs}
            assert len(ran_by) == 2  # both workers took jobs
            for repo in repos:
                spans = sorted((j.started_at, j.finished_at) for j in jobs if j.repository_id == repo.id)
                for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
                    assert start >= end  # one repository never worked on by two jobs at once
            assert all(j.attempts == 1 for j in jobs)
    finally:
        state.close()
