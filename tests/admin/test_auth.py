"""Dashboard authentication, roles and CSRF, through the FastAPI TestClient."""

from __future__ import annotations

from tests.admin.helpers import SECURE, csrf, login, post, repo_row, seed_repo

HTML = {"accept": "text/html"}


def test_off_loopback_every_page_needs_login(client_for) -> None:
    client = client_for(**SECURE)
    for path in ("/admin", "/admin/jobs", "/admin/engine", "/admin/repos/1"):
        resp = client.get(path, headers=HTML, follow_redirects=False)
        assert resp.status_code == 303 and resp.headers["location"] == f"/admin/login?next={path}"
        assert client.get(path, follow_redirects=False).status_code == 401  # scripts get a 401
    assert client.get("/admin/jobs/table").status_code == 401
    token = csrf(client)
    assert client.post("/admin/repos/1/versions/1/pin", data={"csrf_token": token}).status_code == 401


def test_loopback_without_users_is_open_as_admin(client_for) -> None:
    from fastapi.testclient import TestClient

    started = client_for()  # default host 127.0.0.1, no password configured
    local = TestClient(started.app, client=("127.0.0.1", 50000))
    resp = local.get("/admin", headers=HTML)
    assert resp.status_code == 200 and "local · admin" in resp.text
    # Bound to loopback in the settings, but this request did not come from loopback: no free pass.
    remote = TestClient(started.app, client=("203.0.113.9", 50000))
    assert remote.get("/admin", follow_redirects=False).status_code == 401


def test_loopback_with_users_still_requires_login(client_for) -> None:
    client = client_for(admin_password="pw")
    assert client.get("/admin", follow_redirects=False).status_code == 401


def test_off_loopback_without_users_nobody_gets_in(client_for) -> None:
    client = client_for(host="0.0.0.0")
    page = client.get("/admin/login", headers=HTML)
    assert "No dashboard user is configured" in page.text
    assert login(client, "admin", "").status_code == 401
    assert client.get("/admin", follow_redirects=False).status_code == 401


def test_login_logout_and_wrong_password(client_for) -> None:
    client = client_for(**SECURE)
    bad = login(client, "admin", "nope")
    assert bad.status_code == 401 and "wrong user name or password" in bad.text
    assert client.get("/admin", follow_redirects=False).status_code == 401
    ok = login(client, "admin", "admin-pw")
    assert ok.status_code == 303 and ok.headers["location"] == "/admin"
    assert "admin · admin" in client.get("/admin").text
    assert post(client, "/admin/logout").status_code == 303
    assert client.get("/admin", follow_redirects=False).status_code == 401


def test_login_redirects_only_inside_the_dashboard(client_for) -> None:
    client = client_for(**SECURE)
    token = csrf(client)
    for target, expected in (("/admin/jobs", "/admin/jobs"), ("//evil.example/admin", "/admin"),
                             ("https://evil.example", "/admin")):
        client.cookies.clear()
        token = csrf(client)
        resp = client.post("/admin/login", data={"username": "admin", "password": "admin-pw", "csrf_token": token,
                                                 "next": target}, follow_redirects=False)
        assert resp.headers["location"] == expected


def test_session_ends_when_password_changes(client_for) -> None:
    first = client_for(**SECURE)
    assert login(first, "admin", "admin-pw").status_code == 303
    settings = first.app.state.c2l.settings
    settings.admin_password = "rotated"  # the server-side session remembers the password it was opened with
    assert first.get("/admin", follow_redirects=False).status_code == 401
    settings.admin_password = "admin-pw"
    assert first.get("/admin", follow_redirects=False).status_code == 200
    # the cookie alone is not a session: another process with the same signing secret knows its id only when the
    # sessions live in Redis (shared by every API process, by design), never from the cookie itself
    other = client_for(**SECURE)
    other.cookies.update(first.cookies)
    shared = settings.redis_url is not None
    assert other.get("/admin", follow_redirects=False).status_code == (200 if shared else 401)


def test_readonly_role_sees_pages_but_cannot_act(client_for) -> None:
    client = client_for(**SECURE)
    repo_id = seed_repo(client)
    assert login(client, "viewer", "viewer-pw").status_code == 303
    page = client.get(f"/admin/repos/{repo_id}")
    assert page.status_code == 200 and "viewer · readonly" in page.text
    assert "/pin" not in page.text and "Register a repository" not in client.get("/admin").text
    for path in (f"/admin/repos/{repo_id}/versions/1/pin", f"/admin/repos/{repo_id}/rollback",
                 f"/admin/repos/{repo_id}/regenerate", f"/admin/repos/{repo_id}/delete",
                 f"/admin/repos/{repo_id}/webhook-secret", "/admin/repos"):
        assert post(client, path, url="/tmp/x").status_code == 403, path
    repo = repo_row(client, repo_id)
    assert repo is not None and repo.pinned_version is None and repo.active_version == 3
    assert repo.webhook_secret == "old-secret"


def test_csrf_missing_or_invalid_is_refused(client_for) -> None:
    client = client_for(**SECURE)
    repo_id = seed_repo(client)
    assert login(client, "admin", "admin-pw").status_code == 303
    path = f"/admin/repos/{repo_id}/versions/1/pin"
    assert client.post(path).status_code == 403
    assert client.post(path, data={"csrf_token": "forged"}).status_code == 403
    other = client_for(**SECURE)  # a valid token, but of another session
    assert client.post(path, data={"csrf_token": csrf(other)}).status_code == 403
    assert repo_row(client, repo_id).pinned_version is None  # type: ignore[union-attr]  # the row exists: made above
    assert client.post(path, headers={"x-csrf-token": csrf(client, "/admin")}, follow_redirects=False).status_code == 303
    assert repo_row(client, repo_id).pinned_version == 1  # type: ignore[union-attr]  # the row exists: made above


def test_login_form_itself_needs_csrf(client_for) -> None:
    client = client_for(**SECURE)
    resp = client.post("/admin/login", data={"username": "admin", "password": "admin-pw"})
    assert resp.status_code == 403
