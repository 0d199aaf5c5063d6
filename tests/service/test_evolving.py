"""Evolving adaptation: the recurrent state folds each commit's diff; the service builds versions from it."""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest

from tests.conftest import make_git_repo, wait_job


@pytest.fixture(scope="module")
def generator(service_model_dir: Path, service_checkpoint: Path):
    from hypernet.generator import AdapterGenerator

    return AdapterGenerator.load(service_checkpoint, service_model_dir)


def _ctx(tmp_path: Path, files: dict[str, str]):
    from hypernet.context import extract_repo

    tmp_path.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return extract_repo(tmp_path)


OLD = {"lib/core.py": "def compute_total(items: list) -> int:\n    return sum(items)\n",
       "lib/use.py": "from lib.core import compute_total\n\nX = compute_total([1])\n"}
NEW = {"lib/core.py": "def summarize_values(items: list) -> int:\n    return sum(items)\n",
       "lib/use.py": "from lib.core import summarize_values\n\nX = summarize_values([1])\n"}


def test_diff_text_and_fold(generator, tmp_path: Path) -> None:
    from hypernet.evolve import EvolvingState, diff_api_text, fold, initial_state

    old_ctx, new_ctx = _ctx(tmp_path / "old", OLD), _ctx(tmp_path / "new", NEW)
    added, removed = diff_api_text(old_ctx, new_ctx)
    assert "summarize_values" in added and "compute_total" not in added
    assert "compute_total" in removed and "summarize_values" not in removed
    s0 = initial_state(old_ctx, generator, "c0")
    s1 = fold(s0, generator, added, removed, "c1")
    tok = generator.encoder.tokens
    new_ids, old_ids = tok.token_ids("summarize_values").tolist(), tok.token_ids("compute_total").tolist()
    only_new = [i for i in new_ids if i not in old_ids]
    only_old = [i for i in old_ids if i not in new_ids]
    assert all(s1.weights.get(i, 0) > s0.weights.get(i, 0) for i in only_new)
    assert all(s1.weights.get(i, 0) < s0.weights.get(i, 0) for i in only_old)
    assert s1.steps == 1 and s1.commit == "c1" and s1.history == ["c0", "c1"]
    assert EvolvingState.from_json(json.loads(json.dumps(s1.to_json()))).digest == s1.digest
    assert s1.digest != s0.digest
    small = EvolvingState(weights=dict(s0.weights), max_tokens=5)
    assert len(fold(small, generator, added, removed, "c1").weights) <= 5  # bounded state


def test_state_generates_a_loadable_adapter(generator, tmp_path: Path) -> None:
    from hypernet.evolve import generate_from_state, initial_state

    ctx = _ctx(tmp_path / "old", OLD)
    art = generate_from_state(initial_state(ctx, generator, "c0"), generator, tmp_path / "out", ctx)
    again = generate_from_state(initial_state(ctx, generator, "c0"), generator, tmp_path / "out2", ctx)
    assert (art.path / "adapter_config.json").exists() and art.sha256 == again.sha256


def test_evolving_repository_through_the_service(client_for, service_checkpoint: Path, tmp_path: Path,
                                                 make_settings) -> None:
    client = client_for(hypernet_checkpoint=service_checkpoint)
    repo_dir = tmp_path / "evo"
    make_git_repo(repo_dir, OLD)
    created = client.post("/repos", json={"url": str(repo_dir), "mode": "evolving"}).json()
    assert wait_job(client, created["job"]["id"])["status"] == "succeeded"
    repo_id = created["repository"]["id"]
    for rel, text in NEW.items():
        (repo_dir / rel).write_text(text)
    r = git.Repo(repo_dir)
    r.git.add(A=True)
    new_sha = r.index.commit("rename compute_total").hexsha
    job = client.post(f"/repos/{repo_id}/regenerate").json()  # full=True: a fresh state from the new context
    assert wait_job(client, job["id"])["status"] == "succeeded"
    # a push (incremental) folds the diff instead
    (repo_dir / "lib/extra.py").write_text("def brand_new_helper(value: str) -> str:\n    return value\n")
    r.git.add(A=True)
    r.index.commit("add helper")
    from service.webhooks import github_signature

    body = json.dumps({"ref": "refs/heads/main", "before": new_sha, "after": r.head.commit.hexsha,
                       "repository": {"clone_url": created["repository"]["url"], "default_branch": "main"}}).encode()
    resp = client.post("/webhooks/github", content=body, headers={
        "X-GitHub-Event": "push", "X-Hub-Signature-256": github_signature(created["webhook_secret"], body),
        "X-GitHub-Delivery": "evolving-push-1"})
    assert wait_job(client, resp.json()["jobs"][0])["status"] == "succeeded"
    versions = client.get(f"/repos/{repo_id}/versions").json()
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert [v["metrics"]["evolving"]["steps"] for v in versions] == [0, 0, 1]
    state = json.loads((Path(make_settings().workspace_dir) / str(repo_id) / "evolving.json").read_text())
    assert state["commit"] == r.head.commit.hexsha and state["steps"] == 1
    # switching a repository back to static mode
    assert client.patch(f"/repos/{repo_id}", json={"mode": "static"}).json()["mode"] == "static"
