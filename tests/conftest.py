"""Shared fixtures: service settings on SQLite or real PostgreSQL/Redis, git repos made in tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from testkit.repos import SAMPLE_FILES, make_git_repo

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Service tests run on tiny random base models that no shipped hypernetwork fits: the service would refuse to start
# (service.models.plan_adapters). They run with adapters switched off unless they pass a checkpoint that fits;
# tests/service/test_adapter_fit.py sets it back to false to check the refusal.
os.environ.setdefault("CODE2LORA_ALLOW_ADAPTERS_OFF", "true")

LOOPBACK_CLIENT = ("127.0.0.1", 50000)  # TestClient's peer address (its default, "testclient", is not loopback)
PG_URL = os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=0.5):
            return True
    except OSError:
        return False


def pg_available() -> bool:
    return _reachable(PG_URL, 5432)


def redis_available() -> bool:
    return _reachable(REDIS_URL, 6379)


def reset_postgres(url: str) -> None:
    """Give a test an empty schema on the shared test database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def reset_redis(url: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    r.flushdb()
    r.close()


def fresh_rq_env(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch, **extra: str) -> dict[str, str]:
    """Empty PostgreSQL + Redis and the environment of an RQ service on them (also set in this process);
    `extra` adds CODE2LORA_* variables. Returns the environment for worker subprocesses."""
    reset_postgres(PG_URL)
    reset_redis(REDIS_URL)
    env = {**os.environ, "CODE2LORA_DATA_DIR": str(tmp_path / "d"), "CODE2LORA_DATABASE_URL": PG_URL,
           "CODE2LORA_REDIS_URL": REDIS_URL, "CODE2LORA_QUEUE": "rq", "CODE2LORA_ALLOW_LOCAL_REPOS": "true",
           "CODE2LORA_ENGINE": "none", "CODE2LORA_BASE_MODEL_PATH": str(model_dir), "HF_HUB_OFFLINE": "1",
           **extra}
    for k, v in env.items():
        if k.startswith("CODE2LORA_"):
            monkeypatch.setenv(k, v)
    return env


def start_rq_worker(env: dict[str, str]) -> subprocess.Popen:
    """`code2lora worker --burst` as a subprocess with `env` (output discarded)."""
    return subprocess.Popen([sys.executable, "-m", "code2lora.cli", "worker", "--burst"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(params=["sqlite", "postgres+redis"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every service test runs on the embedded defaults and on real PostgreSQL + Redis."""
    if request.param == "postgres+redis":
        if not (pg_available() and redis_available()):
            if os.environ.get("CODE2LORA_REQUIRE_SERVICES"):
                pytest.fail("PostgreSQL/Redis required (CODE2LORA_REQUIRE_SERVICES) but not reachable")
            pytest.skip("PostgreSQL or Redis not reachable")
        reset_postgres(PG_URL)
        reset_redis(REDIS_URL)
    return request.param


@pytest.fixture
def make_settings(tmp_path: Path, backend: str, service_model_dir: Path):
    """Settings factory for the current backend; extra kwargs override fields."""
    from service.settings import Settings

    def _make(**overrides: object) -> Settings:
        fields: dict[str, object] = dict(data_dir=tmp_path / "data", allow_local_repos=True, engine="none",
                                         clone_timeout_s=60, base_model_path=service_model_dir,
                                         model_cache=tmp_path / "models")
        if backend == "postgres+redis":
            fields.update(database_url=PG_URL, redis_url=REDIS_URL)
        fields.update(overrides)
        return Settings(_env_file=None, **fields)  # type: ignore[call-arg]  # _env_file: pydantic-settings' init-only argument

    return _make


@pytest.fixture
def sample_repo(tmp_path: Path) -> Path:
    """A small Python repository committed on branch main."""
    path = tmp_path / "sample"
    make_git_repo(path, SAMPLE_FILES)
    return path


def wait_job(client, job_id: str, timeout: float = 120.0) -> dict:
    """Poll GET /jobs/{id} until the job ends; return its JSON."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")


@pytest.fixture
def client_for(make_settings):
    """Start the app with given setting overrides; yields a TestClient (lifespan runs)."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    clients: list[TestClient] = []

    def _start(bearer: str | None = None, **overrides: object) -> TestClient:
        # a loopback peer: without API keys only loopback clients reach /v1, /repos and /jobs
        c = TestClient(create_app(make_settings(**overrides)), client=LOOPBACK_CLIENT)
        if bearer is not None:  # an API key every request of this client sends
            c.headers["Authorization"] = f"Bearer {bearer}"
        c.__enter__()
        clients.append(c)
        return c

    yield _start
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(client_for):
    return client_for()


@pytest.fixture
def hanging_server() -> Iterator[str]:
    """An https URL on loopback whose server accepts connections and never answers (clone timeout)."""
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def _accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=_accept, daemon=True)
    t.start()
    yield f"https://127.0.0.1:{srv.getsockname()[1]}/owner/repo.git"
    stop.set()
    t.join(2)
    for c in conns:
        c.close()
    srv.close()


@pytest.fixture(scope="session")
def service_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init Llama folder with a tokenizer: the base model of service end-to-end tests."""
    from tests.hypernet.conftest import _byte_tokenizer, tiny_llama

    path = tmp_path_factory.mktemp("service-model")
    tiny_llama(0).save_pretrained(path)
    tok = _byte_tokenizer()
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<s>assistant: {% endif %}")
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def service_checkpoint(service_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hypernet checkpoint whose B head is moved off zero, so different repositories get different adapters."""
    import torch

    from hypernet.checkpoint import save_checkpoint
    from hypernet.generator import AdapterGenerator

    gen = AdapterGenerator.load(None, service_model_dir)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(1)
        gen.hypernet.head_b.weight.normal_(0.0, 0.5)
        gen.hypernet.head_b.bias.normal_(0.0, 0.5)
    path = tmp_path_factory.mktemp("service-ckpt") / "hypernet.safetensors"
    save_checkpoint(gen.hypernet, path)
    return path
