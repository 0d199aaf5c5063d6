"""Secrets never reach the logs: webhook secrets, API keys, admin passwords and credentials inside clone URLs.

Every log record of the whole process is captured at DEBUG while a session uses each secret (register, sign
webhooks, call /v1 with a key and with a wrong one, log in to the dashboard, rotate the secret, clone a URL
with a token in it), then each record is rendered the way the service renders it (JSON formatter) and
searched for every secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.auth import hash_key
from service.observability import JsonFormatter
from tests.conftest import wait_job

API_KEY = "sk-live-Secret-API-key-4242"
ADMIN_PASSWORD = "Adm1n-Pa55word-zz"
URL_TOKEN = "ghp_UrlToken0123456789abcdef"


@pytest.fixture
def backend() -> str:
    return "sqlite"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def all_logs():
    handler, root = _Capture(), logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.records
    root.removeHandler(handler)
    root.setLevel(old_level)


def _rendered(records: list[logging.LogRecord]) -> str:
    fmt, plain = JsonFormatter(), logging.Formatter("%(name)s %(levelname)s %(message)s")
    out = []
    for r in records:
        out.append(fmt.format(r))
        out.append(plain.format(r))
        out.append(repr(r.args))
    return "\n".join(out)


def test_secrets_never_logged(make_settings, sample_repo: Path, all_logs, tmp_path: Path) -> None:
    from service.api.app import create_app

    settings = make_settings(api_keys=[hash_key(API_KEY)], admin_password=ADMIN_PASSWORD, host="0.0.0.0",
                             clone_timeout_s=10)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"  # /repos and /jobs need the key off loopback
        created = client.post("/repos", json={"url": str(sample_repo), "name": "sample"},
                              headers={"Authorization": f"Bearer {API_KEY}"})
        assert created.status_code == 202
        secret = created.json()["webhook_secret"]
        assert wait_job(client, created.json()["job"]["id"])["status"] == "succeeded"

        # /v1 with the key, with a wrong key, and a completion-shaped request
        auth = {"Authorization": f"Bearer {API_KEY}"}
        assert client.get("/v1/models", headers=auth).status_code == 200
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {API_KEY}x"}).status_code == 401

        # signed webhooks: valid, and signed with a wrong secret; GitLab token header
        body = json.dumps({"ref": "refs/heads/other", "after": "0" * 40, "repository": {
            "clone_url": str(sample_repo)}}).encode()
        sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        for signature in (sig, "sha256=" + "0" * 64):
            client.post("/webhooks/github", content=body, headers={"X-GitHub-Event": "push",
                                                                   "X-Hub-Signature-256": signature,
                                                                   "content-type": "application/json"})
        client.post("/webhooks/gitlab", content=json.dumps({"object_kind": "push", "ref": "refs/heads/x",
                                                            "project": {"git_http_url": str(sample_repo)}}).encode(),
                    headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": secret})

        # dashboard login (good and bad password), then rotate the webhook secret
        client.post("/admin/login", data={"username": "admin", "password": ADMIN_PASSWORD + "-wrong"})
        client.post("/admin/login", data={"username": "admin", "password": ADMIN_PASSWORD})
        rotated = client.post("/repos/sample/webhook-secret", headers=auth)
        assert rotated.status_code == 200
        new_secret = rotated.json()["webhook_secret"]

        # a clone URL carrying a token is refused, and the token is not echoed or logged
        bad = client.post("/repos", json={"url": f"https://x-access-token:{URL_TOKEN}@127.0.0.1:9/o/r.git"},
                          headers=auth)
        assert bad.status_code == 422, bad.text  # refused: credentials never get stored or cloned
        assert URL_TOKEN not in bad.text
        assert URL_TOKEN not in client.get("/repos", headers=auth).text

    logs = _rendered(all_logs)
    assert len(all_logs) > 20  # the session did log (requests, jobs)
    for name, value in (("webhook secret", secret), ("rotated webhook secret", new_secret), ("API key", API_KEY),
                        ("admin password", ADMIN_PASSWORD), ("clone URL token", URL_TOKEN)):
        assert value not in logs, f"{name} found in the logs"
    # and the audit trail identifies key holders by fingerprint only
    from sqlalchemy import create_engine, text

    engine = create_engine(str(settings.database_url))
    with engine.connect() as conn:
        actors = [r[0] for r in conn.execute(text("SELECT actor FROM audit_events"))]
    engine.dispose()
    assert actors and not any(API_KEY in a for a in actors)
