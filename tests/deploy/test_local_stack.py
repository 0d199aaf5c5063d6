"""deploy/local-stack brings up api + worker + vLLM CPU on loopback, answers through vLLM, stops everything."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import pg_available, redis_available

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("VLLM_VENV", ROOT / ".venv-vllm"))

# vLLM cold starts take minutes on 2 cores: a longer limit than the suite's 600 s per test.
pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800),
              pytest.mark.skipif(not (VENV / "bin" / "python").exists(), reason=".venv-vllm is absent"),
              pytest.mark.skipif(not (pg_available() and redis_available()), reason="PostgreSQL/Redis needed")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_stack_end_to_end(tmp_path: Path) -> None:
    from tests.conftest import PG_URL, reset_postgres

    reset_postgres(PG_URL)
    env = {**os.environ, "STACK_DIR": str(tmp_path / "stack"), "API_PORT": str(_free_port()),
           "VLLM_PORT": str(_free_port()), "DATABASE_URL": PG_URL, "REDIS_URL": "redis://127.0.0.1:6379/12"}
    out = subprocess.run([str(ROOT / "deploy/local-stack"), "test"], env=env, capture_output=True, text=True,
                         timeout=1200)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["model"].endswith("@v1") and result["engine"]["kind"] == "vllm"
    assert result["adapter_differs"] is True  # the adapter changes the output (text or logprobs) against base
    assert "stopped vllm" in out.stderr and "stopped api" in out.stderr and "stopped worker" in out.stderr
    for name in ("api", "worker", "vllm"):  # nothing left running
        assert not (tmp_path / "stack" / f"{name}.pid").exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(env["API_PORT"]))) != 0
