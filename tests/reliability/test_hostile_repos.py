"""Hostile repositories, each made in the test: the ingest ends in bounded time with a clear error or a
correct partial context, and nothing is written outside the workspace."""

from __future__ import annotations

import os
import time
from pathlib import Path

import git
import pytest

from tests.conftest import make_git_repo, wait_job


@pytest.fixture
def backend() -> str:  # these run on the embedded defaults only (the logic under test is backend-free)
    return "sqlite"


def _ingest(client, path: Path, timeout: float = 120.0) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    resp = client.post("/repos", json={"url": str(path)})
    assert resp.status_code == 202, resp.text
    t0 = time.monotonic()
    job = wait_job(client, resp.json()["job"]["id"], timeout=timeout)
    assert time.monotonic() - t0 < timeout
    return job, client.get(f"/repos/{resp.json()['repository']['id']}").json()


def _snapshot_stats(make_settings, repo_id: int) -> dict:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from service.db.models import ContextSnapshot
    from service.db.session import make_engine, make_sessionmaker

    settings = make_settings()
    engine = make_engine(str(settings.database_url))
    with make_sessionmaker(engine)() as s:
        snap = s.scalars(select(ContextSnapshot).where(ContextSnapshot.repository_id == repo_id)).first()
        stats = dict(snap.stats)
    engine.dispose()
    return stats


def test_symlinks_out_of_the_checkout_are_not_followed(client, tmp_path: Path, make_settings) -> None:
    secret = tmp_path / "outside" / "secret.py"
    secret.parent.mkdir()
    secret.write_text("def leaked_secret_function():\n    return 'TOP SECRET'\n")
    repo = tmp_path / "r"
    make_git_repo(repo, {"pkg/ok.py": "def fine():\n    return 1\n"})
    os.symlink(secret, repo / "pkg" / "link.py")
    os.symlink(secret.parent, repo / "linkdir")
    r = git.Repo(repo)
    r.git.add(A=True)
    r.index.commit("symlinks")
    job, info = _ingest(client, repo)
    assert job["status"] == "succeeded", job
    ctx_file = Path(make_settings().workspace_dir) / str(info["id"]) / "context.json"
    text = ctx_file.read_text()
    assert "fine" in text and "leaked_secret_function" not in text


def test_gitmodules_are_not_fetched(client, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    make_git_repo(elsewhere, {"x.py": "X = 1\n"})
    repo = tmp_path / "r"
    make_git_repo(repo, {"a.py": "A = 1\n", ".gitmodules": f'[submodule "sub"]\n\tpath = sub\n\turl = {elsewhere}\n'})
    job, info = _ingest(client, repo)
    assert job["status"] == "succeeded"
    assert info["last_commit"] == git.Repo(repo).head.commit.hexsha


def test_oversized_repository_fails_clearly(client_for, tmp_path: Path) -> None:
    client = client_for(max_repo_bytes=2_000_000)
    repo = tmp_path / "big"
    make_git_repo(repo, {"small.py": "A = 1\n"})
    (repo / "blob.bin").write_bytes(os.urandom(3_000_000))
    r = git.Repo(repo)
    r.git.add(A=True)
    r.index.commit("big blob")
    job, info = _ingest(client, repo)
    assert job["status"] == "failed" and "over the" in job["error"] and info["active_version"] is None


def test_huge_and_binary_py_files_are_skipped(client_for, tmp_path: Path, make_settings) -> None:
    client = client_for(max_file_bytes=100_000)
    repo = tmp_path / "r"
    make_git_repo(repo, {"good.py": "def good_function(x: int) -> int:\n    return x\n",
                         "huge.py": "X = 1\n" * 50_000})
    (repo / "binary.py").write_bytes(b"\x00\x01\x02\xff" * 1000)
    (repo / "latin1.py").write_bytes("def caf\xe9():\n    return 'd\xe9j\xe0'\n".encode("latin-1"))
    r = git.Repo(repo)
    r.git.add(A=True)
    r.index.commit("odd files")
    job, info = _ingest(client, repo)
    assert job["status"] == "succeeded", job
    stats = _snapshot_stats(make_settings, info["id"])
    text = str(stats)
    assert "good" in (Path(make_settings().workspace_dir) / str(info["id"]) / "context.json").read_text()
    assert "binary" in text or "skipped" in text


def test_pathological_python(client, tmp_path: Path) -> None:
    deep = "x = " + "(" * 10_000 + "1" + ")" * 10_000 + "\n"
    nested = "".join("    " * i + f"if a{i}:\n" for i in range(500)) + "    " * 500 + "pass\n"
    huge_str = 'BIG = "' + "a" * 500_000 + '"\n\ndef after_big():\n    return BIG\n'
    broken = "def ok_before():\n    return 1\n\ndef broken(:\n    pass\n\ndef ok_after():\n    return 2\n"
    repo = tmp_path / "r"
    make_git_repo(repo, {"deep.py": deep, "nested.py": nested, "huge_str.py": huge_str, "broken.py": broken})
    job, _ = _ingest(client, repo, timeout=180)
    assert job["status"] == "succeeded", job


def test_deep_directories_and_many_files(client, tmp_path: Path) -> None:
    repo = tmp_path / "r"
    deep = "/".join(f"d{i}" for i in range(60)) + "/leaf.py"
    files = {deep: "def deep_leaf():\n    return 1\n"}
    files.update({f"many/m{i}.py": f"V{i} = {i}\n" for i in range(3000)})
    make_git_repo(repo, files)
    job, info = _ingest(client, repo, timeout=240)
    assert job["status"] == "succeeded", job
    assert info["active_version"] == 1


def test_empty_repository(client, tmp_path: Path) -> None:
    repo = tmp_path / "empty"
    make_git_repo(repo, {"README.md": "nothing here\n"})
    job, info = _ingest(client, repo)
    assert job["status"] == "succeeded", job  # an empty context still gives a (generic) adapter
    assert info["active_version"] == 1


def test_repository_changing_between_clone_and_extraction(client, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The job extracts the commit it cloned: later upstream commits do not leak into that version."""
    from service.jobs import ingest

    repo = tmp_path / "r"
    first = make_git_repo(repo, {"a.py": "def first_version():\n    return 1\n"})
    real_clone = ingest.clone

    def clone_then_push(*args, **kwargs):  # type: ignore[no-untyped-def]
        sha = real_clone(*args, **kwargs)
        (repo / "a.py").write_text("def second_version():\n    return 2\n")
        r = git.Repo(repo)
        r.git.add(A=True)
        r.index.commit("raced")
        return sha

    monkeypatch.setattr(ingest, "clone", clone_then_push)
    job, info = _ingest(client, repo)
    assert job["status"] == "succeeded"
    versions = client.get(f"/repos/{info['id']}/versions").json()
    assert versions[0]["commit_sha"] == first
