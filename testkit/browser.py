"""Headless Chromium (Debian's, never a downloaded build) and a uvicorn server in a thread."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def require_chromium() -> None:
    """Skip the calling test when Chromium is absent, unless CODE2LORA_REQUIRE_BROWSER=1 (then fail)."""
    missing = not CHROMIUM.exists()
    try:
        import playwright.sync_api  # noqa: F401 - only probes that playwright is installed
    except ImportError:
        missing = True
    if missing:
        if os.environ.get("CODE2LORA_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required but {CHROMIUM} or the playwright package is missing")
        pytest.skip(f"{CHROMIUM} or the playwright package is missing")


def launch_chromium(playwright: Any) -> Any:
    """Start Debian's Chromium through Playwright (no `playwright install`)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """Serve an ASGI app with uvicorn on a free loopback port in a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, name="uvicorn-e2e", daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 120
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.should_exit = True
        self._thread.join(60)
