"""End to end through the API on the tiny model: register -> job -> adapter version -> artifact loads."""

from __future__ import annotations

from pathlib import Path

import git

from tests.conftest import SAMPLE_FILES, make_git_repo, wait_job


def _register(client, url: str, **extra) -> dict:
    resp = client.post("/repos", json={"url": url, **extra})
    assert resp.status_code == 202, resp.text
    job = wait_job(client, resp.json()["job"]["id"])
    assert job["status"] == "succeeded", job
    return resp.json()


def test_ingest_produces_version_1_that_peft_loads(client, sample_repo: Path, make_settings,
                                                   service_model_dir: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    body = _register(client, str(sample_repo))
    repo_id = body["repository"]["id"]
    repo = client.get(f"/repos/{repo_id}").json()
    assert repo["status"] == "ready" and repo["active_version"] == 1
    versions = client.get(f"/repos/{repo_id}/versions").json()
    assert len(versions) == 1
    v1 = versions[0]
    assert v1["version"] == 1 and v1["is_active"] and len(v1["artifact_sha256"]) == 64
    assert v1["commit_sha"] == git.Repo(sample_repo).head.commit.hexsha
    artifact = Path(make_settings().artifact_dir) / v1["artifact_sha256"]
    assert (artifact / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(service_model_dir)
    model = PeftModel.from_pretrained(base, str(artifact))
    with torch.no_grad():
        out = model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(out).all()


def test_same_content_reuses_adapter(client, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make_git_repo(a, SAMPLE_FILES)
    make_git_repo(b, SAMPLE_FILES)
    va = client.get(f"/repos/{_register(client, str(a))['repository']['id']}/versions").json()[0]
    vb = client.get(f"/repos/{_register(client, str(b))['repository']['id']}/versions").json()[0]
    assert va["context_digest"] == vb["context_digest"]
    assert va["artifact_sha256"] == vb["artifact_sha256"]
    assert vb["metrics"]["reused_from"]["version"] == 1


def test_regenerate_without_changes_keeps_version(client, sample_repo: Path) -> None:
    repo_id = _register(client, str(sample_repo))["repository"]["id"]
    job = client.post(f"/repos/{repo_id}/regenerate").json()
    assert wait_job(client, job["id"])["status"] == "succeeded"
    assert [v["version"] for v in client.get(f"/repos/{repo_id}/versions").json()] == [1]


def _push(repo_path: Path, rel: str, text: str) -> str:
    repo = git.Repo(repo_path)
    (repo_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (repo_path / rel).write_text(text)
    repo.git.add(A=True)
    return repo.index.commit(f"edit {rel}").hexsha


def test_versions_pin_rollback_delete_prune(client, sample_repo: Path, make_settings) -> None:
    repo_id = _register(client, str(sample_repo))["repository"]["id"]
    for i in range(2):
        _push(sample_repo, "shapes/extra.py", f"def extra_{i}(n: int) -> int:\n    return n + {i}\n")
        job = client.post(f"/repos/{repo_id}/regenerate").json()
        assert wait_job(client, job["id"])["status"] == "succeeded"
    versions = client.get(f"/repos/{repo_id}/versions").json()
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert len({v["context_digest"] for v in versions}) == 3
    assert client.get(f"/repos/{repo_id}").json()["active_version"] == 3

    # rollback to the previous version, then to an explicit one
    assert client.post(f"/repos/{repo_id}/rollback").json()["active_version"] == 2
    assert client.post(f"/repos/{repo_id}/rollback", json={"version": 1}).json()["active_version"] == 1
    assert client.post(f"/repos/{repo_id}/rollback").status_code == 409  # nothing earlier than 1
    # pin 2: active and pinned; a new push does not move it
    pinned = client.post(f"/repos/{repo_id}/versions/2/pin").json()
    assert pinned["pinned_version"] == 2 and pinned["active_version"] == 2
    assert client.post(f"/repos/{repo_id}/rollback").status_code == 409
    _push(sample_repo, "shapes/more.py", "VALUE = 42\n")
    wait_job(client, client.post(f"/repos/{repo_id}/regenerate").json()["id"])
    repo = client.get(f"/repos/{repo_id}").json()
    assert repo["active_version"] == 2 and repo["pinned_version"] == 2
    assert [v["version"] for v in client.get(f"/repos/{repo_id}/versions").json()] == [1, 2, 3, 4]
    # active/pinned versions cannot be deleted; others can
    assert client.delete(f"/repos/{repo_id}/versions/2").status_code == 409
    v1_sha = client.get(f"/repos/{repo_id}/versions").json()[0]["artifact_sha256"]
    assert client.delete(f"/repos/{repo_id}/versions/1").status_code == 204
    assert not (Path(make_settings().artifact_dir) / v1_sha).exists()
    assert client.delete(f"/repos/{repo_id}/versions/99").status_code == 404
    # retention keeps the newest N plus active/pinned
    assert client.post(f"/repos/{repo_id}/versions/prune", json={"keep": 1}).json() == {"deleted": [3]}
    assert [v["version"] for v in client.get(f"/repos/{repo_id}/versions").json()] == [2, 4]
    # unpin: newest becomes active
    assert client.post(f"/repos/{repo_id}/unpin").json()["active_version"] == 4
    assert client.post(f"/repos/{repo_id}/versions/9/pin").status_code == 404
