"""Repository registration refuses credentials, option injection and shadowing names (issue 21, Medium 5,
Low 14, Low 12), through REST and through the dashboard's form alike.

`ssh://user:password@...` and `?private_token=...` were accepted, stored, returned, shown in /admin, logged and
made part of the repository's name; `ssh://-oProxyCommand=...` passed the service's own check (git refused it
later); the dashboard's register form skipped the REST validation of name and branch, so a repository named
`good@v1` shadowed version 1 of `good`. Nothing here reaches the network: every URL is refused before a clone.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from service.db.models import Job, Repository
from service.repourl import RepoURLError, normalize_repo_url, repo_name_from_url
from tests.admin.helpers import csrf

pytestmark = pytest.mark.timeout(120)

SECRET = "S3cretTok3n-9f8e7d"
CREDENTIAL_URLS = [
    f"ssh://user:{SECRET}@git.example.com/owner/repo.git",
    f"https://user:{SECRET}@git.example.com/owner/repo.git",
    f"https://{SECRET}@git.example.com/owner/repo.git",
    f"https://oauth2:{SECRET}@gitlab.example.com/owner/repo.git",
    f"https://gitlab.example.com/owner/repo.git?private_token={SECRET}",
    f"https://github.example.com/owner/repo.git?access_token={SECRET}",
    f"https://git.example.com/owner/repo.git#{SECRET}",
    f"https://git.example.com/owner/repo.git;token={SECRET}",
    f"git@git.example.com:owner/repo.git?private_token={SECRET}",
]
INJECTION_URLS = [
    "ssh://-oProxyCommand=touch${IFS}/tmp/pwned/x.git",
    "ssh://-oProxyCommand=calc@git.example.com/x.git",
    "ssh://git@-oProxyCommand=calc/x.git",
    "git@-oProxyCommand.example:x.git",
    "-oProxyCommand=calc@git.example.com:x.git",
    "https://-evil.example.com/x.git",
]


@pytest.fixture
def backend() -> str:
    return "sqlite"


def _count(client, model) -> int:
    with client.app.state.c2l.sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize("url", CREDENTIAL_URLS + INJECTION_URLS)
def test_rest_refuses_credentials_and_option_injection_with_422(client_for, url: str) -> None:
    client = client_for()
    resp = client.post("/repos", json={"url": url})
    assert resp.status_code == 422, resp.text
    assert SECRET not in resp.text and "ProxyCommand" not in resp.text  # never echoed
    assert _count(client, Repository) == 0 and _count(client, Job) == 0  # never stored
    assert SECRET not in client.get("/repos").text


def test_plain_urls_still_normalize() -> None:
    for url in ("https://github.com/psf/requests.git", "ssh://git@github.com/psf/requests.git",
                "git@github.com:psf/requests.git", "ssh://git.example.com:2222/x/y.git"):
        assert normalize_repo_url(url, allow_local=False).url == url
    for url in ("https://h.example:99999999/x.git", "https://[::1/x.git"):
        with pytest.raises(RepoURLError):
            normalize_repo_url(url, allow_local=False)
    assert repo_name_from_url("https://h.example/o/123.git") == "repo-123"


@pytest.mark.parametrize("body", [
    {"name": "good@v1"}, {"name": "12"}, {"name": "-rf"}, {"name": ".hidden"},
    {"branch": "-upload-pack=evil"}, {"branch": "a/../b"}, {"branch": "main\nx"},
])
def test_rest_refuses_names_and_branches_that_shadow_or_inject(client_for, body: dict) -> None:
    client = client_for()
    resp = client.post("/repos", json={"url": "/nonexistent/repo", **body})
    assert resp.status_code == 422, resp.text
    assert _count(client, Repository) == 0


@pytest.mark.parametrize("form", [
    {"url": CREDENTIAL_URLS[0]}, {"url": CREDENTIAL_URLS[4]}, {"url": INJECTION_URLS[0]},
    {"url": "/nonexistent/good", "name": "good@v1"}, {"url": "/nonexistent/good", "name": "7"},
    {"url": "/nonexistent/good", "branch": "-x"}, {"url": "/nonexistent/good", "name": "a b"},
])
def test_dashboard_form_refuses_the_same(client_for, form: dict) -> None:
    client = client_for(allow_local_repos=True)  # loopback, no dashboard user: the local admin
    token = csrf(client, "/admin")
    resp = client.post("/admin/repos", data={"csrf_token": token, "mode": "static", **form}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/admin", resp.text[:300]
    page = client.get("/admin", headers={"accept": "text/html"}).text
    assert SECRET not in page and "ProxyCommand" not in page
    assert "not accepted" in page or "must" in page  # the reason is shown
    assert _count(client, Repository) == 0 and _count(client, Job) == 0
