"""X-Forwarded-For is not trusted unless configured, and a made-up bearer token buys no rate limit (issue 21, Low 11).

uvicorn trusts `X-Forwarded-For` from 127.0.0.1 by default, so anyone on the machine could choose the address that
the rate limit and the audit trail see; and without API keys every random bearer token got a fresh rate-limit
bucket. `code2lora serve` now starts uvicorn with proxy headers off unless `CODE2LORA_TRUST_PROXY_HEADERS` is set,
and only a configured key names a rate-limit bucket. The server test runs a real uvicorn on a free loopback port.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def backend() -> str:
    return "sqlite"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_kwargs(monkeypatch, tmp_path: Path, **env: str) -> tuple:
    """What `code2lora serve` hands to uvicorn.run (the app is built, not started)."""
    import uvicorn

    from code2lora.commands.serve import serve
    from service.settings import get_settings

    for k, v in {"CODE2LORA_DATA_DIR": str(tmp_path / "d"), "CODE2LORA_ENGINE": "none",
                 "CODE2LORA_JSON_LOGS": "false", **env}.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    captured: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: captured.update(app=app, **kw))
    try:
        serve(host=None, port=None, log_level="warning")
    finally:
        get_settings.cache_clear()
    app = captured.pop("app")
    return app, captured


def _audit_actors(app) -> list[str]:
    from sqlalchemy import select

    from service.db.models import AuditEvent

    with app.state.c2l.sessions() as s:
        return [e.actor for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]


def test_serve_does_not_trust_forwarded_for_unless_configured(monkeypatch, tmp_path: Path) -> None:
    import uvicorn

    app, kw = _serve_kwargs(monkeypatch, tmp_path)
    assert kw["proxy_headers"] is False
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", log_config=None,
                            proxy_headers=kw["proxy_headers"], forwarded_allow_ips=kw["forwarded_allow_ips"])
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        base = f"http://127.0.0.1:{port}"
        forged = {"X-Forwarded-For": "203.0.113.7"}
        with httpx.Client(base_url=base, timeout=20) as http:
            assert http.get("/repos").status_code == 200  # a direct loopback client, no keys: open
            # the forged header neither changes who we are nor passes as a local client
            resp = http.post("/repos", json={"url": "https://git.example.com/o/r.git?x=1"}, headers=forged)
            assert resp.status_code == 401
        deadline = time.monotonic() + 10  # recorded just after the response is sent
        while not _audit_actors(app) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _audit_actors(app) == ["ip:127.0.0.1"]
    finally:
        server.should_exit = True
        thread.join(30)
    _, trusted = _serve_kwargs(monkeypatch, tmp_path, CODE2LORA_TRUST_PROXY_HEADERS="true",
                               CODE2LORA_FORWARDED_ALLOW_IPS="10.0.0.1")
    assert trusted["proxy_headers"] is True and trusted["forwarded_allow_ips"] == "10.0.0.1"


def test_made_up_bearer_tokens_share_the_address_bucket(client_for) -> None:
    client = client_for(rate_limit_per_s=0.01, rate_limit_burst=2)  # no API keys: open to loopback
    codes = [client.get("/v1/models", headers={"Authorization": f"Bearer {secrets.token_hex(8)}"}).status_code
             for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[2:] == [429, 429], codes
