"""Faults injected while the service runs: Redis stopped, PostgreSQL restarted, the disk full while an
artifact is written. Each ends with the service serving again and nothing acknowledged lost.

Redis and PostgreSQL are throwaway servers started by these tests (tests/reliability/conftest.py), never
the shared ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import LOOPBACK_CLIENT, make_git_repo, wait_job

COMPLETION = {"prompt": "def ", "max_tokens": 4, "temperature": 0}


@pytest.fixture
def backend() -> str:  # the fault tests bring their own Redis/PostgreSQL; the shared ones are untouched
    return "sqlite"


@pytest.fixture
def start_app(make_settings, service_checkpoint: Path):
    """A TestClient that turns server exceptions into 500 responses (as a real server would)."""
    from service.api.app import create_app

    clients: list[TestClient] = []

    def _start(**overrides: object) -> TestClient:
        fields = dict(engine="local", hypernet_checkpoint=service_checkpoint)
        fields.update(overrides)
        c = TestClient(create_app(make_settings(**fields)), raise_server_exceptions=False, client=LOOPBACK_CLIENT)
        c.__enter__()
        clients.append(c)
        return c

    yield _start
    for c in clients:
        c.__exit__(None, None, None)


def _ingest(client: TestClient, path: Path, name: str) -> dict:
    resp = client.post("/repos", json={"url": str(path), "name": name})
    assert resp.status_code == 202, resp.text
    job = wait_job(client, resp.json()["job"]["id"])
    return job


def _complete(client: TestClient, model: str):
    return client.post("/v1/completions", json={"model": model, **COMPLETION})


def _repo(tmp_path: Path, name: str, body: str = "x") -> Path:
    path = tmp_path / "src" / name
    make_git_repo(path, {f"{name}/mod.py": f"def {name}_fn(a: int) -> int:\n    return a  # {body}\n"})
    return path


# --------------------------------------------------------------------------------------------- Redis

def test_redis_stopped_mid_run_serves_from_db_and_artifacts(start_app, throwaway_redis, tmp_path: Path) -> None:
    from service.db.models import AdapterVersion
    from service.store import adapter_path

    client = start_app(redis_url=throwaway_redis.url)
    state = client.app.state.c2l
    assert _ingest(client, _repo(tmp_path, "alpha"), "alpha")["status"] == "succeeded"
    assert _complete(client, "alpha").status_code == 200
    assert client.get("/healthz").json()["redis"]["ok"] is True
    assert state.cache.health()["entries"] == 1

    throwaway_redis.stop()  # crash: no shutdown, connections refused from now on
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    assert health.json()["redis"]["ok"] is False
    # reads, completions and a whole new ingest keep working from the DB and the artifact folder
    assert client.get("/repos/alpha").status_code == 200
    assert _complete(client, "alpha").status_code == 200
    assert _ingest(client, _repo(tmp_path, "beta"), "beta")["status"] == "succeeded"
    out = _complete(client, "beta")
    assert out.status_code == 200 and out.json()["model"] == "beta@v1"
    assert client.post("/repos/alpha/regenerate").status_code == 202
    assert client.get("/metrics").text.count("code2lora_redis") >= 1

    throwaway_redis.start()  # back, empty (no persistence)
    health = client.get("/healthz").json()
    assert health["redis"]["ok"] is True and health["status"] == "ok"
    # the cache fills again: a new version is cached, and a lost artifact folder is restored from it
    assert _ingest(client, _repo(tmp_path, "gamma"), "gamma")["status"] == "succeeded"
    assert state.cache.health()["entries"] == 1
    with state.sessions() as s:
        gamma = s.scalars(select(AdapterVersion).order_by(AdapterVersion.id.desc())).first()
    shutil.rmtree(gamma.artifact_path)
    restored = adapter_path(state, gamma)
    from hypernet.adapter import adapter_sha256

    assert adapter_sha256(restored) == gamma.artifact_sha256
    assert _complete(client, "gamma").status_code == 200
    # nothing acknowledged was lost: every repository has its version
    names = {r["name"]: r["active_version"] for r in client.get("/repos").json()}
    assert names == {"alpha": 1, "beta": 1, "gamma": 1}


# ---------------------------------------------------------------------------------------- PostgreSQL

def test_postgres_restart_fails_cleanly_then_recovers(start_app, throwaway_postgres, tmp_path: Path) -> None:
    client = start_app(database_url=throwaway_postgres.url)
    assert _ingest(client, _repo(tmp_path, "alpha"), "alpha")["status"] == "succeeded"
    assert _complete(client, "alpha").status_code == 200
    created = client.post("/repos", json={"url": str(_repo(tmp_path, "beta")), "name": "beta"})
    assert created.status_code == 202
    assert wait_job(client, created.json()["job"]["id"])["status"] == "succeeded"

    throwaway_postgres.stop()
    # every route that needs the database answers 503 + Retry-After, never a 500 or a hang
    assert client.get("/healthz").status_code == 503
    for method, path, body in (("get", "/repos", None), ("get", "/repos/alpha", None),
                               ("post", "/repos", {"url": str(tmp_path / "src" / "nope")}),
                               ("get", "/v1/models", None), ("post", "/v1/completions", {"model": "alpha", **COMPLETION})):
        resp = getattr(client, method)(path, **({"json": body} if body else {}))
        assert resp.status_code == 503, (path, resp.status_code, resp.text)
        assert int(resp.headers["retry-after"]) >= 1
        if path.startswith("/v1/"):
            assert resp.json()["error"]["type"] == "service_unavailable"

    throwaway_postgres.start()  # same data folder: a restart, not a new database
    assert client.get("/healthz").status_code == 200
    repos = {r["name"]: r["active_version"] for r in client.get("/repos").json()}
    assert repos == {"alpha": 1, "beta": 1}  # acknowledged work survived
    assert _complete(client, "alpha").status_code == 200
    assert _ingest(client, _repo(tmp_path, "gamma"), "gamma")["status"] == "succeeded"


# ----------------------------------------------------------------------------------------- disk full

def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.environ.get("CODE2LORA_TEST_NO_TMPFS") or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _fill(path: Path) -> Path:
    """Fill the filesystem at `path` to the last byte."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (65536, 4096, 1):
            try:
                while os.write(fd, b"\0" * chunk):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An artifact folder on a full filesystem: a real 2 MiB tmpfs when we can mount one, else every
    write under the folder raises ENOSPC (monkeypatched). Yields (folder, free-the-space callback)."""
    folder = tmp_path / "artifacts"
    if _mount_tmpfs(folder, "2m"):
        try:
            filler = _fill(folder)
            yield folder, "tmpfs", lambda: filler.unlink()
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        return
    import builtins
    import errno

    real_open, full = builtins.open, {"on": True}

    def fake_open(file, mode="r", *args, **kw):
        if full["on"] and any(m in mode for m in "wax") and str(folder) in os.fspath(file):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kw)

    monkeypatch.setattr(builtins, "open", fake_open)
    yield folder, "monkeypatch", lambda: full.update(on=False)


def test_disk_full_while_writing_artifact_leaves_no_corrupted_version(start_app, full_disk, tmp_path: Path) -> None:
    from hypernet.adapter import adapter_sha256
    from service.db.models import AdapterVersion

    folder, how, free = full_disk
    client = start_app(artifact_dir=folder)
    resp = client.post("/repos", json={"url": str(_repo(tmp_path, "alpha")), "name": "alpha"})
    job = wait_job(client, resp.json()["job"]["id"])
    assert job["status"] == "failed", job
    assert "space" in job["error"].lower() and str(folder) not in job["error"], job["error"]
    state = client.app.state.c2l
    with state.sessions() as s:
        assert s.scalars(select(AdapterVersion)).all() == []  # no version points at a half adapter
    leftovers = [p.name for p in folder.iterdir() if p.name not in ("filler", "lost+found")]
    assert leftovers == [], f"partial artifact left behind ({how}): {leftovers}"
    assert _complete(client, "alpha").status_code == 409  # not ready, clearly said, no 500

    free()
    retried = client.post("/repos/alpha/regenerate")
    assert retried.status_code == 202, retried.text
    assert wait_job(client, retried.json()["id"])["status"] == "succeeded"
    with state.sessions() as s:
        versions = s.scalars(select(AdapterVersion)).all()
    assert len(versions) == 1
    assert adapter_sha256(Path(versions[0].artifact_path)) == versions[0].artifact_sha256  # bytes intact
    assert _complete(client, "alpha").status_code == 200


# ------------------------------------------------------------------------- Redis down, RQ job queue

def test_redis_down_with_rq_queue_refuses_cleanly_and_leaves_nothing_half_registered(
        start_app, throwaway_redis, tmp_path: Path) -> None:
    import redis as redis_lib

    from service.db.models import Job
    from service.jobs.queue import RQ_QUEUE_NAME

    client = start_app(redis_url=throwaway_redis.url, queue="rq", engine="none")
    state = client.app.state.c2l
    alpha = _repo(tmp_path, "alpha")
    ok = client.post("/repos", json={"url": str(alpha), "name": "alpha"})
    assert ok.status_code == 202

    throwaway_redis.stop()
    refused = client.post("/repos", json={"url": str(_repo(tmp_path, "beta")), "name": "beta"})
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1, refused.text
    regen = client.post("/repos/alpha/regenerate")
    assert regen.status_code == 503 and int(regen.headers["retry-after"]) >= 1, regen.text
    # nothing half-registered: no 'beta' row, no job that no worker will ever see
    assert [r["name"] for r in client.get("/repos").json()] == ["alpha"]
    with state.sessions() as s:
        assert s.query(Job).count() == 1

    throwaway_redis.start()  # back (empty: this throwaway Redis has no persistence)
    again = client.post("/repos", json={"url": str(tmp_path / "src" / "beta"), "name": "beta"})
    assert again.status_code == 202, again.text  # the client's retry works: no 409 from a half registration
    conn = redis_lib.Redis.from_url(throwaway_redis.url)
    try:
        assert conn.llen(f"rq:queue:{RQ_QUEUE_NAME}") == 1
    finally:
        conn.close()
