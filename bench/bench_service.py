"""End-to-end service timings on the bundled model (local engine, embedded defaults).

1. `POST /repos` of a 200-file repository -> job done -> first completion through its adapter.
2. A one-file push to a 1,000-file repository: signed webhook -> new active version, as a ratio to a
   full re-ingest (fresh clone + full extraction + generation) of the same repository.

Run: python bench/bench_service.py [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, publish

SECTION = "## Service end to end"
CMD = "python bench/bench_service.py"


def make_repo(dest: Path, n_files: int) -> Path:
    """A git repository of `n_files` real Python files from the standard library."""
    import git

    std = Path(os.__file__).parent
    files = sorted(p for p in std.rglob("*.py") if "test" not in p.parts and "site-packages" not in p.parts
                   and p.stat().st_size < 200_000)[:n_files]
    for p in files:
        target = dest / p.relative_to(std)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
    repo = git.Repo.init(dest, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "bench").set_value("user", "email", "bench@example.com")
    repo.git.add(A=True)
    repo.index.commit("import")
    return dest


def wait(client, job_id: str) -> dict:
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            if job["status"] == "failed":
                raise RuntimeError(job["error"])
            return job
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.settings import Settings
    from service.webhooks import github_signature

    tmp = Path(tempfile.mkdtemp(prefix="c2l-bench-"))
    settings = Settings(_env_file=None, data_dir=tmp / "data", allow_local_repos=True, engine="local",
                        json_logs=False)
    small, big = make_repo(tmp / "small", 200), make_repo(tmp / "big", 1000)
    rows: list[tuple[str, float]] = []
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as client:  # a loopback peer
        # warm the generator and engine so the numbers are per-repository costs, not process start-up
        warm = client.post("/repos", json={"url": str(make_repo(tmp / "warm", 5))}).json()
        wait(client, warm["job"]["id"])
        client.post("/v1/completions", json={"model": "warm", "prompt": "import ", "max_tokens": 1})

        t0 = time.perf_counter()
        created = client.post("/repos", json={"url": str(small), "name": "small"}).json()
        wait(client, created["job"]["id"])
        t_ready = time.perf_counter()
        out = client.post("/v1/completions", json={"model": "small", "prompt": "def main(", "max_tokens": 16,
                                                   "temperature": 0}).json()
        t_first = time.perf_counter()
        assert out["model"] == "small@v1", out
        rows.append(("200-file repo: POST /repos -> adapter ready (s)", t_ready - t0))
        rows.append(("200-file repo: POST /repos -> first completion (16 tokens) (s)", t_first - t0))

        t0 = time.perf_counter()
        created = client.post("/repos", json={"url": str(big), "name": "big"}).json()
        wait(client, created["job"]["id"])
        full_ingest = time.perf_counter() - t0
        rows.append(("1,000-file repo: full ingest (clone + extract + generate) (s)", full_ingest))

        import git

        repo = git.Repo(big)
        target = next(p for p in sorted(big.rglob("*.py")) if p.stat().st_size > 2000)
        target.write_text(target.read_text() + "\n\ndef bench_added_function(x: int) -> int:\n    return x\n")
        repo.git.add(A=True)
        new = repo.index.commit("one-file change").hexsha
        body = json.dumps({"ref": "refs/heads/main", "before": "0" * 39 + "1", "after": new,
                           "repository": {"clone_url": created["repository"]["url"], "default_branch": "main"}}).encode()
        t0 = time.perf_counter()
        resp = client.post("/webhooks/github", content=body, headers={
            "X-GitHub-Event": "push", "X-GitHub-Delivery": "bench-1",
            "X-Hub-Signature-256": github_signature(created["webhook_secret"], body)}).json()
        wait(client, resp["jobs"][0])
        push = time.perf_counter() - t0
        active = client.get("/repos/big").json()["active_version"]
        assert active == 2, active
        rows.append(("1,000-file repo: one-file push webhook -> new active version (s)", push))
        rows.append(("ratio push / full ingest", push / full_ingest))
    shutil.rmtree(tmp, ignore_errors=True)

    lines = [SECTION, "", f"Command: `{CMD}`  ", f"Machine: {machine()}  ",
             "Bundled SmolLM2-135M-Instruct, default hypernetwork checkpoint, local engine, SQLite, in-process "
             "queue; generator and engine warmed up on a 5-file repository first. Repositories are copies "
             "of standard-library files committed to a local git repository.", "",
             "| measurement | value |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in rows]
    publish(SECTION, lines, write=not args.no_write)


if __name__ == "__main__":
    main()
