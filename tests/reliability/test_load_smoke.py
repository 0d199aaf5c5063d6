"""The load test itself (bench/load.py), shortened: no errors under load, the adapter LRU holds, an
over-capacity burst is refused with Retry-After and no timeouts. Needs wrk (Debian package); slow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_bounded_load_and_burst() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "--no-write", "--repos", "8", "--hot", "2",
                          "--slots", "3", "--duration", "5", "--connections", "4", "--inflight", "8", "--burst", "48"],
                         cwd=ROOT, capture_output=True, text=True, timeout=540,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    for check in ("no errors under load", "adapter LRU bounded", "burst: excess refused", "serving after the burst"):
        assert f"PASS: {check}" in out.stdout, out.stdout[-3000:]
