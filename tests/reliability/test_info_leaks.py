"""What the service tells clients it should not (issue 21, Low 13, after the webhook and /v1/models halves).

Job errors carried server paths (an ImportError named the virtualenv, an OSError the workspace); open `/metrics`
and `/healthz` listed repository (adapter) names, login attempts and the Redis host:port. Now a crash shows its
kind and an error id (the details are in the server log under that id), job error messages are scrubbed of the
service's own folders, `/metrics` needs API access, and `/healthz` gives clients without API access its status
alone.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.bootstrap import build_state
from service.db.models import Job, Repository
from service.jobs import runner
from service.jobs.base import JobError
from tests.conftest import LOOPBACK_CLIENT

pytestmark = pytest.mark.timeout(300)

KEY = "leak-test-key-0123456789"
REMOTE = ("203.0.113.20", 41000)


def _job(state, job_id: str) -> None:
    with state.sessions.begin() as s:
        repo = Repository(name=f"r{job_id}", url=f"https://example.com/o/{job_id}.git", branch="", status="queued")
        s.add(repo)
        s.flush()
        s.add(Job(id=job_id, kind="ingest", repository_id=repo.id, status="queued"))


def test_a_crashed_job_shows_an_error_id_not_its_paths(modelless_settings, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from service.jobs import ingest

    state = build_state(modelless_settings(), start_queue=False)
    secret_path = f"{sys.prefix}/lib/python3/site-packages/transformers/__init__.py"
    workspace_file = state.settings.workspace_dir / "1" / "checkout" / "x.py"

    def crash(state, job, report):
        raise ImportError(f"cannot import name 'AutoConfig' from 'transformers' ({secret_path})")

    def os_crash(state, job, report):
        raise FileNotFoundError(2, "No such file or directory", str(workspace_file))

    try:
        for job_id, body in (("crash1", crash), ("crash2", os_crash)):
            monkeypatch.setattr(ingest, "run_ingest", body)
            _job(state, job_id)
            with caplog.at_level(logging.ERROR, logger="service.jobs.runner"):
                assert runner.run_job(state, job_id) == "failed"
            with state.sessions() as s:
                job = s.get(Job, job_id)
                repo = s.get(Repository, job.repository_id)
                error, shown = job.error, repo.status_message
            m = re.fullmatch(r"internal error \((ImportError|FileNotFoundError), error id ([0-9a-f]{12})\); "
                             r"the server log has the details", error)
            assert m, error
            assert shown == error  # the repository shows the same, path-free text
            assert "/" not in error and sys.prefix not in error and str(state.settings.data_dir) not in error
            # The operator finds the full story in the log under that id.
            logged = "\n".join(r.getMessage() for r in caplog.records if m.group(2) in r.getMessage())
            assert m.group(2) in logged and ("AutoConfig" in logged or str(workspace_file) in logged), logged
    finally:
        state.close()


def test_job_error_messages_are_scrubbed_of_server_folders(modelless_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.jobs import ingest

    state = build_state(modelless_settings(), start_queue=False)
    where = state.settings.workspace_dir / "7" / "checkout"

    def fail(state, job, report):
        raise JobError(f"could not read {where}/setup.py (from {sys.prefix}/bin/git)")

    monkeypatch.setattr(ingest, "run_ingest", fail)
    try:
        _job(state, "scrub1")
        assert runner.run_job(state, "scrub1") == "failed"
        with state.sessions() as s:
            error = s.get(Job, "scrub1").error
        assert error == "could not read <server>/7/checkout/setup.py (from <server>/bin/git)"
    finally:
        state.close()


def _app(modelless_settings, **overrides: object):
    from service.api.app import create_app

    return create_app(modelless_settings(**overrides))


def test_healthz_details_only_for_clients_with_api_access(modelless_settings) -> None:
    parts = {"database", "redis", "engine", "queue"}
    # Open loopback service (no keys): a loopback client sees the parts, a remote one only the status.
    app = _app(modelless_settings)
    with TestClient(app, client=LOOPBACK_CLIENT) as local, TestClient(app, client=REMOTE) as remote:
        full = local.get("/healthz")
        assert full.status_code == 200 and parts <= set(full.json()), full.json()
        summary = remote.get("/healthz")
        assert summary.status_code == 200 and summary.json() == {"status": full.json()["status"]}
        proxied = local.get("/healthz", headers={"X-Forwarded-For": "198.51.100.1"})
        assert proxied.json() == {"status": full.json()["status"]}
    # With keys: the key shows the parts, from anywhere; no key or a wrong one shows the status.
    app = _app(modelless_settings, host="0.0.0.0", api_keys=["sha256:" + hashlib.sha256(KEY.encode()).hexdigest()])
    with TestClient(app, client=REMOTE) as remote:
        assert parts <= set(remote.get("/healthz", headers={"Authorization": f"Bearer {KEY}"}).json())
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            body = remote.get("/healthz", headers=headers).json()
            assert set(body) == {"status"}, body


def test_healthz_summary_hides_redis_host_and_adapter_names(modelless_settings) -> None:
    # Redis on a closed loopback port: the detailed answer names it, the summary must not.
    app = _app(modelless_settings, redis_url="redis://127.0.0.1:1/0")
    with TestClient(app, client=LOOPBACK_CLIENT) as local, TestClient(app, client=REMOTE) as remote:
        detailed = local.get("/healthz").text
        summary = remote.get("/healthz")
        assert summary.json()["status"] in ("ok", "degraded")
        assert "127.0.0.1" not in summary.text and ":1" not in summary.text and "loaded" not in summary.text
        assert len(summary.text) < len(detailed)


def test_metrics_need_api_access(modelless_settings) -> None:
    app = _app(modelless_settings)
    with TestClient(app, client=LOOPBACK_CLIENT) as local, TestClient(app, client=REMOTE) as remote:
        assert local.get("/metrics").status_code == 200
        assert "code2lora_http_requests_total" in local.get("/metrics").text
        refused = remote.get("/metrics")
        assert refused.status_code == 401 and "code2lora_" not in refused.text
    app = _app(modelless_settings, host="0.0.0.0", api_keys=["sha256:" + hashlib.sha256(KEY.encode()).hexdigest()])
    with TestClient(app, client=REMOTE) as remote:
        assert remote.get("/metrics").status_code == 401
        assert remote.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = remote.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and "code2lora_http_requests_total" in ok.text


def test_scrubbing_keeps_user_text(modelless_settings) -> None:
    settings = modelless_settings()
    assert runner.public_message("git clone failed for file:///srv/repos/x: not found", settings) == \
        "git clone failed for file:///srv/repos/x: not found"
    assert runner.public_message(f"{Path(settings.data_dir)}/code2lora.db is locked", settings) == \
        "<server>/code2lora.db is locked"
