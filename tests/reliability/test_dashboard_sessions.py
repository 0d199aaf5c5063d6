"""Dashboard sessions (issue 21, Medium 9): login throttling, failed logins audited, server-side sessions that
logout revokes, no password-derived value in the cookie, `Secure` over TLS, and the no-login mode refusing
proxied requests the way the REST loopback check does.

Before: 40 wrong passwords in 2 s were all answered and none audited; a cookie copied before logout still worked;
the cookie carried a fingerprint of the password digest (an offline guess); no `Secure` flag over TLS; the
no-login mode looked only at the peer address, so a reverse proxy on this machine made every client admin.
"""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.db.models import AuditEvent
from tests.admin.helpers import SECURE, csrf, login

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def backend() -> str:
    return "sqlite"


def _login_events(client) -> list[tuple[int, str]]:
    with client.app.state.c2l.sessions() as s:
        return [(e.status, e.actor) for e in s.scalars(select(AuditEvent).where(AuditEvent.path == "/admin/login"))]


def test_login_is_throttled_per_client_and_user_and_failures_are_audited(client_for) -> None:
    client = client_for(**SECURE, login_max_failures=5, login_failure_window_s=60)
    codes = [login(client, "admin", f"guess-{i}").status_code for i in range(5)]
    assert codes == [401] * 5
    throttled = login(client, "admin", "admin-pw")  # even the right password is not checked now
    assert throttled.status_code == 429 and 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert login(client, "viewer", "viewer-pw").status_code == 429  # this client is throttled for any user
    # Another client: the user "admin" is throttled too (a spray from many addresses), other users are not.
    other = TestClient(client.app, client=("127.0.0.2", 40000))
    assert login(other, "admin", "admin-pw").status_code == 429
    assert login(other, "viewer", "viewer-pw").status_code == 303
    events = _login_events(client)
    assert [s for s, _ in events].count(401) == 5 and [s for s, _ in events].count(429) == 3
    assert all(actor.startswith(("ip:", "key:", "admin:")) for _, actor in events)
    assert (303, "admin:viewer") in events


def _cookie_payload(client) -> dict:
    raw = client.cookies.get("c2l_admin")
    data = raw.split(".", 1)[0]
    return json.loads(base64.b64decode(data + "=" * (-len(data) % 4)))


def test_logout_revokes_the_session_and_the_cookie_holds_no_password_fingerprint(client_for) -> None:
    client = client_for(**SECURE)
    assert login(client, "admin", "admin-pw").status_code == 303
    payload = _cookie_payload(client)
    assert "fp" not in payload and set(payload) <= {"sid", "user", "csrf", "flash"}, payload
    assert "admin-pw" not in json.dumps(payload)
    copied = dict(client.cookies)
    assert client.get("/admin", follow_redirects=False).status_code == 200
    token = csrf(client, "/admin")
    assert client.post("/admin/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    thief = TestClient(client.app, client=("127.0.0.1", 50001))
    thief.cookies.update(copied)  # the cookie as it was before logout: signed and unexpired, but revoked
    assert thief.get("/admin", follow_redirects=False).status_code == 401
    # a new login gets a new id; the old one stays revoked
    assert login(client, "admin", "admin-pw").status_code == 303
    assert _cookie_payload(client)["sid"] != payload["sid"]
    assert thief.get("/admin", follow_redirects=False).status_code == 401


def test_session_cookie_is_secure_over_tls(client_for) -> None:
    client = client_for(**SECURE)
    tls = TestClient(client.app, base_url="https://testserver", client=("127.0.0.1", 50002))
    resp = login(tls, "admin", "admin-pw")
    assert resp.status_code == 303
    cookie = [v for k, v in resp.headers.multi_items() if k == "set-cookie" and v.startswith("c2l_admin=")]
    assert cookie and "secure" in cookie[-1].lower(), cookie
    plain = login(client, "admin", "admin-pw")
    cookie = [v for k, v in plain.headers.multi_items() if k == "set-cookie" and v.startswith("c2l_admin=")]
    assert cookie and "secure" not in cookie[-1].lower()


@pytest.mark.parametrize("header", [{"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"},
                                    {"X-Real-IP": "203.0.113.9"}])
def test_no_login_mode_refuses_proxied_requests(client_for, header: dict) -> None:
    client = client_for()  # no dashboard users, loopback bind: open to direct loopback clients only
    assert client.get("/admin", follow_redirects=False).status_code == 200
    resp = client.get("/admin", headers=header, follow_redirects=False)
    assert resp.status_code == 401, resp.text
    token = csrf(client, "/admin")
    acted = client.post("/admin/repos", data={"csrf_token": token, "url": "/nonexistent/x"}, headers=header,
                        follow_redirects=False)
    assert acted.status_code == 401
