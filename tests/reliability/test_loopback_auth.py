""""Open only on loopback" is decided from the client's address, not from a setting (issue 21, High 2).

Started as `uvicorn --factory service.api.app:create_app --host 0.0.0.0` the settings still say 127.0.0.1, and
`/repos` and `/v1` were open to every remote client without keys (`DELETE /repos/1` included). Here the
TestClient's peer address stands for where the connection came from: a remote address (or a loopback one that
came through a proxy, with a forwarding header) must get 401 without keys on `/repos`, `/jobs` and `/v1`, while
webhooks stay reachable (they are signed per repository) and probes stay open.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from fastapi.testclient import TestClient

from service.api.auth import hash_key

pytestmark = pytest.mark.timeout(120)

SECRET = "whsec-loopback-test"
URL = "https://example.com/owner/project.git"
PROTECTED = [
    ("GET", "/repos", None), ("POST", "/repos", {"url": "https://example.com/a/b.git"}),
    ("GET", "/repos/1", None), ("DELETE", "/repos/1", None), ("POST", "/repos/1/regenerate", None),
    ("POST", "/repos/1/webhook-secret", None), ("GET", "/jobs/some-job", None), ("GET", "/v1/models", None),
    ("POST", "/v1/completions", {"model": "base", "prompt": "x", "max_tokens": 1}),
    ("POST", "/v1/chat/completions", {"model": "base", "messages": [{"role": "user", "content": "x"}]}),
]


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def app(make_settings):
    from service.api.app import create_app
    from service.db.models import Repository

    app = create_app(make_settings(engine="none"))  # settings: host 127.0.0.1, no API keys
    with TestClient(app, client=("127.0.0.1", 50000)):
        with app.state.c2l.sessions() as session:
            session.add(Repository(name="project", url=URL, branch="", status="ready", webhook_secret=SECRET))
            session.commit()
        yield app


def _call(client: TestClient, method: str, path: str, body: dict | None):
    return client.request(method, path, json=body) if body is not None else client.request(method, path)


def _ping(client: TestClient, secret: str = SECRET):
    body = json.dumps({"zen": "hi", "repository": {"clone_url": URL}}).encode()
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return client.post("/webhooks/github", content=body,
                       headers={"X-GitHub-Event": "ping", "X-Hub-Signature-256": sig,
                                "Content-Type": "application/json"})


@pytest.mark.parametrize("peer", [("10.0.0.5", 1234), ("203.0.113.9", 40000), ("2001:db8::1", 1234)])
def test_remote_clients_without_keys_are_refused(app, peer) -> None:
    remote = TestClient(app, client=peer)
    for method, path, body in PROTECTED:
        resp = _call(remote, method, path, body)
        assert resp.status_code == 401, (method, path, resp.status_code, resp.text)
        assert resp.headers.get("www-authenticate") == "Bearer"
    with app.state.c2l.sessions() as session:  # the DELETE did nothing
        from service.db.models import Repository

        assert session.get(Repository, 1) is not None
    # webhooks stay reachable (signed per repository), probes stay open
    assert _ping(remote).status_code == 200
    assert _ping(remote, "wrong-secret").status_code == 401
    assert remote.get("/healthz").status_code == 200


@pytest.mark.parametrize("header", [{"X-Forwarded-For": "198.51.100.7"}, {"Forwarded": "for=198.51.100.7"},
                                    {"X-Real-IP": "198.51.100.7"}])
def test_loopback_through_a_proxy_is_not_local(app, header) -> None:
    proxied = TestClient(app, client=("127.0.0.1", 50001), headers=header)
    for method, path, body in PROTECTED:
        assert _call(proxied, method, path, body).status_code == 401, (method, path)


@pytest.mark.parametrize("peer", [("127.0.0.1", 50000), ("127.5.6.7", 1), ("::1", 2), ("::ffff:127.0.0.1", 3)])
def test_direct_loopback_clients_are_open(app, peer) -> None:
    local = TestClient(app, client=peer)
    assert local.get("/repos").status_code == 200
    assert local.get("/v1/models").status_code == 200
    assert local.get("/jobs/nope").status_code == 404
    assert local.post("/v1/completions", json={"model": "base", "prompt": "x"}).status_code == 503  # no engine


def test_unnamed_peers_and_the_testclient_default_are_not_local(app) -> None:
    assert TestClient(app).get("/repos").status_code == 401  # peer "testclient": not an address
    assert TestClient(app, client=("localhost.evil.example", 1)).get("/repos").status_code == 401


def test_keys_work_from_anywhere_and_a_public_bind_refuses_even_loopback(make_settings) -> None:
    from service.api.app import create_app

    keyed = create_app(make_settings(engine="none", api_keys=[hash_key("k-remote")]))
    with TestClient(keyed, client=("10.0.0.5", 1234)) as remote:
        assert remote.get("/repos").status_code == 401
        assert remote.get("/repos", headers={"Authorization": "Bearer k-remote"}).status_code == 200
    with TestClient(keyed, client=("127.0.0.1", 1)) as local:
        assert local.get("/repos").status_code == 401  # keys configured: required from loopback too
    public = create_app(make_settings(engine="none", host="0.0.0.0"))
    with TestClient(public, client=("127.0.0.1", 1)) as local:
        assert local.get("/repos").status_code == 401
