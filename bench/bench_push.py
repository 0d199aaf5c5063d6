"""Where a one-file push to a 1,000-file repository spends its time, next to a full ingest of the same repository.

Same setup as bench_service.py (bundled model, shipped hypernetwork, local engine, SQLite, in-process queue,
generator and engine warmed on a 5-file repository). Each stage of the job is timed by wrapping the function
that does it: fetch (git), context extraction (full or the changed files), loading and saving the saved
context, the repository analysis (import graph, PageRank, conventions; computed lazily inside other stages), the
held-out split, adapter generation (encode / hypernetwork forward / write, from the artifact's own timings),
scoring against base and the active version, packing into the cache and the engine swap.

Run: python bench/bench_push.py [--files 1000] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_service import make_repo, wait
from bench.common import machine, publish

SECTION = "## One-file push: where the time goes"
CMD = "python bench/bench_push.py"

TIMES: dict[str, float] = defaultdict(float)


def _timed(owner: Any, name: str, label: str) -> None:
    """Wrap owner.name so its wall time adds to TIMES[label]."""
    real = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            TIMES[label] += time.perf_counter() - t0

    setattr(owner, name, wrapper)


def instrument() -> None:
    import hypernet.context as hc
    import hypernet.context.repo as hrepo
    import service.evaluation as evaluation
    import service.jobs.ingest as ingest
    import service.store as store
    from service.state import ServiceState

    _timed(ingest, "clone", "git clone")
    _timed(ingest, "fetch_and_checkout", "git fetch + checkout")
    _timed(ingest, "load_context", "load saved context (context.json)")
    _timed(ingest, "save_context", "save context (context.json)")
    _timed(hc, "extract_repo", "extract: full")
    _timed(hc, "changes_between", "extract: changed files (git diff)")
    _timed(hc, "update_context", "extract: re-extract changed files")
    _timed(hrepo, "analyse", "analysis (import graph, PageRank, conventions) [inside other stages]")
    _timed(evaluation, "prepare", "held-out split + reading held-out files")
    _timed(evaluation, "score", "scoring (base, candidate, active arms)")
    _timed(evaluation, "load_tensors", "scoring: loading adapter tensors")
    _timed(store, "pack_adapter", "pack adapter into the cache")
    _timed(ServiceState, "announce", "engine swap (load new, unload old)")
    _timed(hrepo.RepoContext, "summary", "context snapshot summary")


def job_seconds(client, job_id: str) -> tuple[float, float]:
    """(queue wait, run time) of a finished job from its timestamps."""
    import datetime as dt

    job = client.get(f"/jobs/{job_id}").json()
    created, started, finished = (dt.datetime.fromisoformat(job[k]) for k in ("created_at", "started_at",
                                                                                   "finished_at"))
    return (started - created).total_seconds(), (finished - started).total_seconds()


def run_stage(client, action) -> tuple[dict[str, float], float, str, dict]:
    TIMES.clear()
    t0 = time.perf_counter()
    job_id = action()
    wait(client, job_id)
    wall = time.perf_counter() - t0
    return dict(TIMES), wall, job_id, {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--no-eval", action="store_true", help="CODE2LORA_EVAL_ENABLED=false: no scoring, no gate")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    instrument()
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import Settings
    from service.webhooks import github_signature

    tmp = Path(tempfile.mkdtemp(prefix="c2l-bench-push-"))
    settings = Settings(_env_file=None, data_dir=tmp / "data", allow_local_repos=True, engine="local",
                        json_logs=False, eval_enabled=not args.no_eval)
    big = make_repo(tmp / "big", args.files)
    results: dict[str, tuple[dict[str, float], float, tuple[float, float], dict]] = {}
    load = os.getloadavg()[0]
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as client:
        warm = client.post("/repos", json={"url": str(make_repo(tmp / "warm", 5))}).json()
        wait(client, warm["job"]["id"])
        client.post("/v1/completions", json={"model": "warm", "prompt": "import ", "max_tokens": 1})

        created: dict = {}

        def register() -> str:
            created.update(client.post("/repos", json={"url": str(big), "name": "big"}).json())
            return created["job"]["id"]

        times, wall, job_id, _ = run_stage(client, register)
        v1 = client.get("/repos/big/versions").json()[-1]
        results["full ingest"] = (times, wall, job_seconds(client, job_id), v1["metrics"])

        import git

        repo = git.Repo(big)
        target = next(p for p in sorted(big.rglob("*.py")) if p.stat().st_size > 2000)
        target.write_text(target.read_text() + "\n\ndef bench_added_function(x: int) -> int:\n    return x\n")
        repo.git.add(A=True)
        new = repo.index.commit("one-file change").hexsha

        def push() -> str:
            body = json.dumps({"ref": "refs/heads/main", "before": "0" * 39 + "1", "after": new,
                               "repository": {"clone_url": created["repository"]["url"],
                                             "default_branch": "main"}}).encode()
            resp = client.post("/webhooks/github", content=body, headers={
                "X-GitHub-Event": "push", "X-GitHub-Delivery": "bench-push-1",
                "X-Hub-Signature-256": github_signature(created["webhook_secret"], body)}).json()
            return resp["jobs"][0]

        times, wall, job_id, _ = run_stage(client, push)
        v2 = client.get("/repos/big/versions").json()[-1]
        results["one-file push"] = (times, wall, job_seconds(client, job_id), v2["metrics"])
    shutil.rmtree(tmp, ignore_errors=True)

    labels: list[str] = []
    for times, *_ in results.values():
        labels += [k for k in times if k not in labels]
    rows = []
    for label in labels:
        rows.append((label, *(results[k][0].get(label) for k in results)))
    for part in ("encode", "forward", "write"):
        rows.append((f"generate: {part} (artifact timings)",
                     *((results[k][3].get("timings_ms") or {}).get(part, 0) / 1e3 for k in results)))
    rows.append(("queue wait (job created -> started)", *(results[k][2][0] for k in results)))
    rows.append(("job run time (started -> finished)", *(results[k][2][1] for k in results)))
    rows.append(("**request -> job finished (wall)**", *(results[k][1] for k in results)))
    full, push_ = results["full ingest"][1], results["one-file push"][1]

    flags = " --no-eval" if args.no_eval else ""
    lines = [SECTION, "", f"Command: `{CMD} --files {args.files}{flags}`  ", f"Machine: {machine()}; 1-minute load "
             f"average {load:.1f} at the start  ",
             "Bundled SmolLM2-135M-Instruct, shipped hypernetwork, local engine, SQLite, in-process queue; generator "
             "and engine warmed on a 5-file repository. The repository: the first "
             f"{args.files} standard-library files in a local git repository; the push appends a function to one "
             "file. Seconds per stage (stages marked [inside other stages] are counted inside others too).", "",
             "| stage | full ingest (s) | one-file push (s) |", "|---|---:|---:|"]
    for label, *vals in rows:
        lines.append(f"| {label} | " + " | ".join("" if v is None else f"{v:.3f}" for v in vals) + " |")
    lines += ["", f"Ratio push / full ingest: **{push_ / full:.2f}** ({push_:.2f} s / {full:.2f} s)."]
    publish(SECTION, lines, write=not args.no_write)


if __name__ == "__main__":
    main()
