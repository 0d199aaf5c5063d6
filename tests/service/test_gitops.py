"""URL checks and cloning."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.gitops import clone
from service.repourl import CloneError, RepoURLError, normalize_repo_url, repo_name_from_url


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("https://github.com/psf/requests.git", "https"),
        ("ssh://git@github.com/psf/requests.git", "ssh"),
        ("git@github.com:psf/requests.git", "ssh"),
    ],
)
def test_accepted_urls(raw: str, kind: str) -> None:
    assert normalize_repo_url(raw, allow_local=False).kind == kind


@pytest.mark.parametrize(
    "raw",
    ["ext::sh -c id", "fd::3", "-uhttps://x/y", "--upload-pack=id", "http://x.org/y", "file:///tmp/x", "/tmp/x",
     "transport::https://x/y", "https://x.org/a b", "https://x.org/a\nb"],
)
def test_refused_urls(raw: str) -> None:
    with pytest.raises(RepoURLError):
        normalize_repo_url(raw, allow_local=False)


def test_local_paths_become_file_urls(tmp_path: Path) -> None:
    out = normalize_repo_url(str(tmp_path), allow_local=True)
    assert out.kind == "file" and out.url == tmp_path.resolve().as_uri()


def test_repo_names() -> None:
    assert repo_name_from_url("https://github.com/psf/requests.git") == "requests"
    assert repo_name_from_url("git@github.com:psf/black.git") == "black"
    assert repo_name_from_url("file:///tmp/my%20repo/") == "my-20repo"


def test_clone_is_atomic_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "ws" / "checkout"
    url = normalize_repo_url(str(tmp_path / "missing"), allow_local=True)
    with pytest.raises(CloneError):
        clone(url, dest, branch=None, timeout_s=30, max_bytes=10**9)
    assert not dest.exists()
    assert list((tmp_path / "ws").iterdir()) == []


def test_git_refuses_ext_transport_even_if_passed(tmp_path: Path) -> None:
    from service.repourl import NormalizedURL

    marker = tmp_path / "pwned"
    with pytest.raises(CloneError):
        clone(NormalizedURL(f"ext::sh -c touch% {marker}", "https"), tmp_path / "d", branch=None,
              timeout_s=10, max_bytes=10**9)
    assert not marker.exists()
