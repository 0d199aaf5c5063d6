"""Measured versions, the promotion gate and the refine job, end to end on the tiny random model (issue 18)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import make_git_repo, wait_job

# Enough files for a held-out slice: a package whose names repeat across modules, and tests that use them.
MODULES = {
    f"inventory/{name}.py": (
        "from inventory.core import StockLedger, reconcile_ledger\n\n\n"
        f"def {name}_report(ledger: StockLedger, warehouse_code: str) -> dict:\n"
        f"    \"\"\"Summarise {name} for one warehouse.\"\"\"\n"
        "    totals = reconcile_ledger(ledger, warehouse_code)\n"
        f"    return {{'{name}': totals, 'warehouse_code': warehouse_code}}\n\n\n"
        f"def {name}_threshold(ledger: StockLedger) -> int:\n"
        "    return ledger.reorder_level * 2\n"
    )
    for name in ("pallets", "crates", "shelves", "bins", "racks")
}
FILES = {
    "inventory/__init__.py": "from inventory.core import StockLedger, reconcile_ledger\n",
    "inventory/core.py": (
        "class StockLedger:\n    \"\"\"Quantities per warehouse.\"\"\"\n\n"
        "    def __init__(self, reorder_level: int) -> None:\n        self.reorder_level = reorder_level\n"
        "        self.entries: dict[str, int] = {}\n\n"
        "    def record_movement(self, warehouse_code: str, quantity: int) -> None:\n"
        "        self.entries[warehouse_code] = self.entries.get(warehouse_code, 0) + quantity\n\n\n"
        "def reconcile_ledger(ledger: StockLedger, warehouse_code: str) -> int:\n"
        "    return ledger.entries.get(warehouse_code, 0)\n"
    ),
    **MODULES,
    "tests/test_core.py": (
        "from inventory.core import StockLedger, reconcile_ledger\n\n\n"
        "def test_reconcile_ledger():\n    ledger = StockLedger(reorder_level=3)\n"
        "    ledger.record_movement('north', 5)\n    assert reconcile_ledger(ledger, 'north') == 5\n"
    ),
    "tests/test_reports.py": (
        "from inventory.core import StockLedger\nfrom inventory.pallets import pallets_report\n\n\n"
        "def test_pallets_report():\n    ledger = StockLedger(reorder_level=1)\n"
        "    assert pallets_report(ledger, 'south')['warehouse_code'] == 'south'\n"
    ),
}


@pytest.fixture(scope="module")
def trained_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama trained for a few seconds on the repository's text, so that it predicts it far better than
    chance (a random-init model is near uniform, and nothing can make it measurably worse)."""
    from tests.hypernet.conftest import _byte_tokenizer, tiny_llama

    model, tok = tiny_llama(0).train(), _byte_tokenizer()
    ids = tok("\n".join(FILES.values()), add_special_tokens=False)["input_ids"]
    data = torch.tensor(ids[: len(ids) // 128 * 128]).view(-1, 128)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(120):
        batch = data[torch.randint(0, data.shape[0], (8,), generator=g)]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("trained-tiny")
    model.eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def client(client_for, trained_model_dir: Path):
    return client_for(base_model_path=trained_model_dir)


@pytest.fixture
def inventory_repo(tmp_path: Path) -> Path:
    path = tmp_path / "inventory"
    make_git_repo(path, FILES)
    return path


def _ingest(client, url: str) -> int:
    resp = client.post("/repos", json={"url": url})
    assert resp.status_code == 202, resp.text
    job = wait_job(client, resp.json()["job"]["id"])
    assert job["status"] == "succeeded", job
    return resp.json()["repository"]["id"]


def _hurting_adapter(state, scale: float = 3.0) -> tuple[str, Path]:
    """A hand-made LoRA with a large random B on every target: it wrecks the base model's predictions."""
    from hypernet.adapter import write_adapter
    from hypernet.basemodel import find_targets, load_base_model

    model = load_base_model(state.settings.base_model_path)
    g = torch.Generator().manual_seed(7)
    tensors = {t.path: (torch.randn(4, t.in_features, generator=g), torch.randn(t.out_features, 4, generator=g) * scale)
               for t in find_targets(model)}
    files = write_adapter(tensors, state.settings.artifact_dir, base_model="tiny", lora_alpha=8.0)
    return files.sha256, files.path


def _record(state, repo_id: int, sha: str, path: Path, kind: str = "generated"):
    """Put an adapter through the same path as a push: score on the held-out slice, gate, store."""
    from service import evaluation
    from service.adapters import record_version
    from service.jobs.workspace import checkout_dir, load_context
    from service.repos import find_repo

    with state.sessions() as s:
        repo = find_repo(s, repo_id)
        commit = repo.last_commit
    ctx = load_context(state, repo_id, commit)
    _seen, held = evaluation.prepare(state, repo_id, ctx, checkout_dir(state, repo_id), commit)
    return record_version(state, repo_id, kind=kind, commit_sha=commit, hypernet_version="hand-made",
                          context_digest="0" * 64, sha=sha, path=path, metrics={}, heldout=held,
                          report=lambda _f, _m: None)


def test_every_version_is_measured_and_the_hypernet_never_sees_the_held_out_files(client, inventory_repo: Path) -> None:
    rid = _ingest(client, str(inventory_repo))
    [v1] = client.get(f"/repos/{rid}/versions").json()
    ev = v1["metrics"]["eval"]
    assert set(ev) >= {"base", "candidate", "heldout_files", "seconds", "budget"}
    for arm in ("base", "candidate"):
        assert ev[arm]["loss"] > 0 and ev[arm]["ident_loss"] is not None and ev[arm]["n_tokens"] > 0
        assert 0 <= ev[arm]["invented_rate"] <= 1 and 0 <= ev[arm]["ident_em"] <= 1
    assert v1["kind"] == "generated" and v1["is_active"]
    assert v1["metrics"]["promotion"]["promoted"] and v1["metrics"]["promotion"]["reason"].startswith("first version")

    state = client.app.state.c2l
    from service.db.models import ContextSnapshot, Repository

    with state.sessions() as s:
        split = s.get(Repository, rid).eval_split
        snapshot = s.query(ContextSnapshot).filter_by(repository_id=rid).one()
    held = split["paths"]
    assert held and ev["heldout_files"] == len(held) and not split["too_small"]
    assert any(p.startswith("tests/") for p in held)  # tests are held out preferably
    # The context the hypernetwork read (snapshot and version digest) lacks exactly the held-out files.
    assert v1["metrics"]["context"] == {"files": len(FILES) - len(held), "definitions": snapshot.stats["stats"]["definitions"],
                                        "heldout_files": len(held)}
    assert v1["metrics"]["context"]["definitions"] > 0  # the old bug: metrics.context was {}
    from hypernet.context import extract_repo
    from service import evaluation

    full = extract_repo(inventory_repo)
    assert v1["context_digest"] == evaluation.context_slice(full, set(held)).digest != full.digest


def test_too_small_repository_says_so(client, sample_repo: Path) -> None:
    rid = _ingest(client, str(sample_repo))
    [v1] = client.get(f"/repos/{rid}/versions").json()
    assert v1["metrics"]["eval"] == {"skipped": "too small to measure: 3 files"}
    assert v1["metrics"]["context"]["files"] == 3 and v1["is_active"]
    page = client.get(f"/admin/repos/{rid}").text
    assert "too small to measure: 3 files" in page


def test_split_is_deterministic_and_kept_for_later_files() -> None:
    from hypernet.context import FileFacts, RepoContext
    from service import evaluation

    def ctx(paths: list[str]) -> RepoContext:
        files = {p: FileFacts(path=p, language="python", sha256=p, size=1, lines=1, is_test=p.startswith("tests/"))
                 for p in paths}
        return RepoContext.build(files, {}, max_file_bytes=1000, max_files=100)

    paths = [f"pkg/m{i}.py" for i in range(30)] + [f"tests/test_{i}.py" for i in range(10)]
    kw = dict(seed=0, fraction=0.15, test_fraction=0.5, min_files=4)
    a, b = evaluation.make_split(ctx(paths), **kw), evaluation.make_split(ctx(list(reversed(paths))), **kw)
    assert a == b and a["paths"]
    tests_share = sum(p.startswith("tests/") for p in a["paths"]) / 10
    assert tests_share > sum(p.startswith("pkg/") for p in a["paths"]) / 30
    later = ctx(paths + [f"pkg/new{i}.py" for i in range(20)])
    held_later = evaluation.heldout_paths(a, later)
    assert set(a["paths"]) <= held_later  # old held-out files stay held out, new ones follow the same rule
    assert held_later - set(a["paths"]) == {p for p in held_later if p.startswith("pkg/new")}
    assert evaluation.make_split(ctx(paths[:3]), **kw)["too_small"]


def test_gate_refuses_a_hurting_adapter_and_pin_or_activation_override_it(client, inventory_repo: Path) -> None:
    rid = _ingest(client, str(inventory_repo))
    state = client.app.state.c2l
    sha, path = _hurting_adapter(state)
    v2 = _record(state, rid, sha, path)
    assert not v2.is_active and v2.version == 2, v2.metrics
    promo = v2.metrics["promotion"]
    assert promo["promoted"] is False and promo["gate_passed"] is False
    ev = v2.metrics["eval"]
    assert ev["candidate"]["ident_loss"] > ev["active"]["ident_loss"] + 0.02 and ev["active_version"] == 1
    assert promo["reason"].startswith("ident_loss ") and " > active " in promo["reason"] and "+ 0.02" in promo["reason"]
    repo = client.get(f"/repos/{rid}").json()
    assert repo["active_version"] == 1

    versions = client.get(f"/repos/{rid}/versions").json()
    assert versions[1]["metrics"]["promotion"]["reason"] == promo["reason"]  # the API returns it
    page = client.get(f"/admin/repos/{rid}").text
    assert promo["reason"].replace(">", "&gt;") in page and "identifier loss" in page

    # Manual activation and pinning override the gate; unpinning goes back to the newest version that passed.
    assert client.post(f"/repos/{rid}/rollback", json={"version": 2}).json()["active_version"] == 2
    assert client.post(f"/repos/{rid}/rollback", json={"version": 1}).json()["active_version"] == 1
    assert client.post(f"/repos/{rid}/versions/2/pin").json()["active_version"] == 2
    assert client.post(f"/repos/{rid}/unpin").json()["active_version"] == 1


def test_version_scores_repeat_exactly(client, inventory_repo: Path) -> None:
    rid = _ingest(client, str(inventory_repo))
    state = client.app.state.c2l
    from service import evaluation
    from service.jobs.workspace import checkout_dir, load_context

    sha, path = _hurting_adapter(state, scale=0.3)
    commit = client.get(f"/repos/{rid}").json()["last_commit"]
    ctx = load_context(state, rid, commit)
    _seen, held = evaluation.prepare(state, rid, ctx, checkout_dir(state, rid), commit)
    arms = {"base": None, "candidate": evaluation.load_tensors(path)}
    first, second = (evaluation.score(state, held, arms) for _ in range(2))
    first.pop("seconds"), second.pop("seconds")
    assert first == second and first["candidate"] != first["base"]
    # ... and the stored metrics of a version match a fresh scoring of it.
    v2 = _record(state, rid, sha, path)
    stored = {k: v for k, v in v2.metrics["eval"]["candidate"].items()}
    assert stored == first["candidate"]


def test_refine_job_makes_a_refined_version_through_the_gate(client_for, trained_model_dir: Path, inventory_repo: Path) -> None:
    client = client_for(base_model_path=trained_model_dir, refine_steps=6, refine_lr=1e-2, refine_seq_len=64, refine_batch=2)
    rid = _ingest(client, str(inventory_repo))
    resp = client.post(f"/repos/{rid}/refine", json={"steps": 8})
    assert resp.status_code == 202, resp.text
    job = wait_job(client, resp.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["kind"] == "refine" and "refined version 2" in job["message"]
    v1, v2 = client.get(f"/repos/{rid}/versions").json()
    assert v2["kind"] == "refined" and v2["status"] == "ready"
    ref = v2["metrics"]["refine"]
    assert ref["from_version"] == 1 and 1 <= ref["steps"] <= 8 and ref["config"]["steps"] == 8
    assert ref["val_best"]["objective"] < ref["val_start"]["objective"]
    assert set(v2["metrics"]["eval"]) >= {"base", "active", "candidate"}
    assert v2["metrics"]["promotion"]["reason"]
    assert v2["is_active"] == v2["metrics"]["promotion"]["promoted"]
    assert v2["metrics"]["context"]["heldout_files"] == v1["metrics"]["context"]["heldout_files"]

    assert client.post("/repos/nope/refine").status_code == 404
    assert "refine" in client.get("/openapi.json").json()["paths"]["/repos/{ref}/refine"]["post"]["operationId"]


def test_refine_without_an_adapter_is_a_conflict(client, inventory_repo: Path) -> None:
    resp = client.post("/repos", json={"url": str(inventory_repo), "branch": "missing"})  # the ingest fails
    assert resp.status_code == 202
    wait_job(client, resp.json()["job"]["id"])
    r = client.post(f"/repos/{resp.json()['repository']['id']}/refine")
    assert r.status_code == 409 and "no active adapter" in r.json()["detail"]


def test_refine_killed_mid_run_leaves_the_active_version_serving(client_for, trained_model_dir: Path, inventory_repo: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import hypernet.refine

    real = hypernet.refine.refine_adapter
    calls = {"n": 0}

    def killed(*args, progress=None, **kwargs):
        def dying(frac: float, msg: str) -> None:
            progress(frac, msg)
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("worker killed")
        return real(*args, progress=dying, **kwargs)

    client = client_for(base_model_path=trained_model_dir, refine_steps=6, refine_lr=1e-2, refine_seq_len=64, refine_batch=2)
    rid = _ingest(client, str(inventory_repo))
    monkeypatch.setattr(hypernet.refine, "refine_adapter", killed)
    job = wait_job(client, client.post(f"/repos/{rid}/refine", json={"steps": 8}).json()["id"])
    # the client sees the kind of failure and an id, not the message (issue 21 Low 13)
    assert job["status"] == "failed" and "RuntimeError, error id" in job["error"], job["error"]
    repo = client.get(f"/repos/{rid}").json()
    assert repo["active_version"] == 1 and repo["status"] == "ready"
    assert [v["version"] for v in client.get(f"/repos/{rid}/versions").json()] == [1]
    assert client.post("/v1/completions", json={"model": repo["name"], "prompt": "def ", "max_tokens": 2}).status_code in (200, 503)

    # Retried, it runs to the end (the repository lock was released, nothing half-written stays).
    monkeypatch.setattr(hypernet.refine, "refine_adapter", real)
    from service.db.models import Job
    from service.repos import retry_job

    state = client.app.state.c2l
    with state.sessions() as s:
        again = retry_job(state, s, s.get(Job, job["id"])).id
    assert wait_job(client, again)["status"] == "succeeded"
    assert [v["kind"] for v in client.get(f"/repos/{rid}/versions").json()] == ["generated", "refined"]


def test_dashboard_refine_button_queues_a_job(client_for, trained_model_dir: Path, inventory_repo: Path) -> None:
    from tests.admin.helpers import SECURE, jobs_of, login, post

    client = client_for(base_model_path=trained_model_dir, refine_steps=2, refine_seq_len=64, refine_batch=2, **SECURE)
    assert login(client, "admin", "admin-pw").status_code == 303
    rid = _ingest(client, str(inventory_repo))
    page = client.get(f"/admin/repos/{rid}").text
    assert f'action="/admin/repos/{rid}/refine"' in page and "held-out files" in page
    assert client.post(f"/admin/repos/{rid}/refine", data={}, follow_redirects=False).status_code == 403  # no CSRF
    assert post(client, f"/admin/repos/{rid}/refine").status_code == 303
    job = next(j for j in jobs_of(client, rid) if j.kind == "refine")
    assert wait_job(client, job.id)["status"] == "succeeded"


def test_refine_after_ingest_setting(client_for, trained_model_dir: Path, inventory_repo: Path) -> None:
    client = client_for(base_model_path=trained_model_dir, refine_after_ingest=True, refine_steps=2, refine_seq_len=64, refine_batch=2)
    rid = _ingest(client, str(inventory_repo))
    from service.db.models import Job

    with client.app.state.c2l.sessions() as s:
        refine_jobs = s.query(Job).filter_by(repository_id=rid, kind="refine").all()
    assert len(refine_jobs) == 1
    assert wait_job(client, refine_jobs[0].id)["status"] == "succeeded"


def test_local_engine_scores_on_its_own_weights_without_touching_serving(client_for, trained_model_dir: Path,
                                                                          inventory_repo: Path) -> None:
    client = client_for(base_model_path=trained_model_dir, engine="local")
    state = client.app.state.c2l
    engine_model = state.serving_engine.model
    params = list(engine_model.parameters())
    before = [p.detach().clone() for p in params]
    rid = _ingest(client, str(inventory_repo))
    [v1] = client.get(f"/repos/{rid}/versions").json()
    assert v1["metrics"]["eval"]["candidate"]["loss"] > 0

    from service import evaluation

    view, _tok = evaluation.scoring_model(state).get(state)
    assert view is not engine_model
    shared = {id(p) for p in engine_model.parameters()}
    assert all(id(p) in shared for p in view.parameters())  # the same tensors: no second copy of the weights
    assert not any(type(m).__name__ == "StackedLoRALinear" for m in view.modules())
    assert not any(m._forward_hooks for m in engine_model.modules())  # scoring's LoRA hooks never reached serving
    assert all(torch.equal(b, p) for b, p in zip(before, params, strict=False))
    body = {"model": "base", "prompt": "def reconcile_", "max_tokens": 4, "temperature": 0}
    assert client.post("/v1/completions", json=body).status_code == 200


def test_refine_command_offline(trained_model_dir: Path, inventory_repo: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from code2lora.cli import app

    monkeypatch.setenv("CODE2LORA_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("CODE2LORA_REFINE_SEQ_LEN", "64")
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["refine", str(inventory_repo), "--base-model", str(trained_model_dir),
                                   "--steps", "4", "--lr", "0.01", "--json", str(out)])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert set(d) >= {"base", "generated", "refined", "refined_minus_generated", "refine", "wall_s", "heldout_files"}
    assert d["generated"]["loss"] > 0 and d["refined"]["ident_loss"] is not None and d["wall_s"]["total"] > 0
    assert d["refine"]["steps"] <= 4 and d["context_files"] + len(d["heldout_files"]) == len(FILES)


def test_a_push_goes_through_the_gate(client, inventory_repo: Path) -> None:
    import git

    rid = _ingest(client, str(inventory_repo))
    for path in sorted((inventory_repo / "inventory").glob("*.py")):  # at most half are held out: context changes
        path.write_text(path.read_text() + "\n\ndef audit_trail(ledger) -> int:\n    return len(ledger.entries)\n")
    repo = git.Repo(inventory_repo)
    repo.git.add(A=True)
    repo.index.commit("add trays")
    job = wait_job(client, client.post(f"/repos/{rid}/regenerate").json()["id"])
    assert job["status"] == "succeeded", job
    v1, v2 = client.get(f"/repos/{rid}/versions").json()
    ev, promo = v2["metrics"]["eval"], v2["metrics"]["promotion"]
    assert ev["active_version"] == 1 and set(ev) >= {"base", "active", "candidate"}
    assert promo["metric"] == "ident_loss" and promo["reason"].startswith("ident_loss ")
    # the untrained hypernet writes no-op adapters: candidate = active = base, so the gate lets it through
    assert promo["promoted"] and v2["is_active"] and "active" in job["message"]
    assert ev["heldout_files"] == v1["metrics"]["eval"]["heldout_files"]  # the same split
    assert v2["context_digest"] != v1["context_digest"]
