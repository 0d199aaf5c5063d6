"""Start and stop real vLLM CPU servers on loopback (deploy/vllm/run-cpu.sh from .venv-vllm), for tests and
benchmarks: free ports, one process group per server, logs kept for the failure message."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("VLLM_VENV", ROOT / ".venv-vllm"))


def vllm_installed() -> bool:
    """Whether the vLLM CPU virtualenv (deploy/vllm/setup-cpu.sh) is there."""
    return (VENV / "bin" / "python").exists()


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class VllmServer:
    """One vLLM process started by `start_vllm`; `url` answers once `wait_ready` returned."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def tail(self, chars: int = 3000) -> str:
        """The end of the server's log."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, deadline: float) -> None:
        """Block until ``/health`` answers 200; RuntimeError when the process exits or ``deadline`` (monotonic)
        passes."""
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vLLM did not come up on {self.url}:\n{self.tail()}")
            time.sleep(2)

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Signal the server's process group (only the group this server started) and reap it."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def start_vllm(model_dir: Path, log: Path, args: Sequence[str] = (), env: dict[str, str] | None = None,
               nice: int = 10) -> VllmServer:
    """Launch deploy/vllm/run-cpu.sh for ``model_dir`` on a free loopback port (not waiting for it: `wait_ready`).

    ``env`` adds variables (MAX_LORAS, MAX_MODEL_LEN, ...); ``nice`` is the niceness it runs at on shared machines
    (at least the caller's own: a caller under ``nice -n 10`` starts it at 10, not 20)."""
    port = free_port()
    full_env = dict(os.environ, **(env or {}))
    cmd = ["bash", str(ROOT / "deploy/vllm/run-cpu.sh"), str(model_dir), str(port), *args]
    increment = nice - os.nice(0)
    if increment > 0:
        cmd = ["nice", "-n", str(increment), *cmd]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    return VllmServer(proc, port, log, dict(env or {}))
