"""Evolving adaptation on a rename: does the adapter after the push predict the new name better?

A repository uses `compute_total` everywhere; a commit renames it to `summarize_values`. We register
the repository twice (static and evolving mode), push the rename, and measure the bundled model's loss
on held-out code that uses the *new* name, with the adapter before the push (v1) and after it (v2).

Run: python bench/bench_evolving.py [--checkpoint PATH] [--no-write]
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

SECTION = "## Evolving adaptation (rename)"
CMD = "python bench/bench_evolving.py"
OLD, NEW = "compute_total", "summarize_values"


def repo_files(name: str) -> dict[str, str]:
    """A small package where `name` is defined once and used across modules."""
    files = {"ledger/core.py": (f"def {name}(items: list[float]) -> float:\n"
                                f"    \"\"\"Sum of the item amounts.\"\"\"\n    return float(sum(items))\n")}
    for i, topic in enumerate(["invoice", "budget", "payroll", "report", "tax", "audit", "refund", "order"]):
        files[f"ledger/{topic}.py"] = (
            f"from ledger.core import {name}\n\n\n"
            f"def {topic}_amount(rows: list[float]) -> float:\n    return {name}(rows) * {i + 1}\n\n\n"
            f"def {topic}_summary(rows: list[float]) -> str:\n    total = {name}(rows)\n"
            f"    return f\"{topic}: {{total}}\"\n")
    return files


HELD_OUT = (f"from ledger.core import {NEW}\n\n\ndef shipping_amount(rows):\n    return {NEW}(rows) * 2\n\n\n"
            f"def shipping_summary(rows):\n    total = {NEW}(rows)\n    return total\n")


def name_loss(model, tokenizer, text: str, name: str) -> float:
    """Mean NLL over the tokens that spell `name` in `text`."""
    import torch

    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids = torch.tensor([enc["input_ids"]])
    spans = []
    start = 0
    while (pos := text.find(name, start)) >= 0:
        spans.append((pos, pos + len(name)))
        start = pos + 1
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
    losses = []
    for t, (a, b) in enumerate(enc["offset_mapping"][1:], start=1):
        if any(a < e and b > s for s, e in spans):
            losses.append(-logp[t - 1, ids[0, t]].item())
    return sum(losses) / len(losses)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import git
    from fastapi.testclient import TestClient
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from service.api.app import create_app
    from service.models import base_model_dir
    from service.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="c2l-evo-"))
    settings = Settings(_env_file=None, data_dir=tmp / "data", allow_local_repos=True, engine="none",
                        json_logs=False, **({"hypernet_checkpoint": args.checkpoint} if args.checkpoint else {}))
    rows = []
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as client:  # a loopback peer
        def wait(job_id: str) -> None:
            while (job := client.get(f"/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
                time.sleep(0.05)
            assert job["status"] == "succeeded", job

        paths = {}
        for mode in ("static", "evolving"):
            src = tmp / f"src-{mode}"
            src.mkdir()
            for rel, text in repo_files(OLD).items():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_text(text)
            r = git.Repo.init(src, initial_branch="main")
            r.git.add(A=True)
            r.index.commit("v1", author=git.Actor("b", "b@x"), committer=git.Actor("b", "b@x"))
            created = client.post("/repos", json={"url": str(src), "name": mode, "mode": mode}).json()
            wait(created["job"]["id"])
            for rel, text in repo_files(NEW).items():
                (src / rel).write_text(text)
            r.git.add(A=True)
            r.index.commit("rename", author=git.Actor("b", "b@x"), committer=git.Actor("b", "b@x"))
            wait(client.post(f"/repos/{mode}/regenerate").json()["id"] if mode == "static" else
                 _push(client, created, r.head.commit.hexsha))
            versions = client.get(f"/repos/{mode}/versions").json()
            paths[mode] = [v["artifact_path"] if "artifact_path" in v else
                           str(Path(settings.artifact_dir) / v["artifact_sha256"]) for v in versions]
        generator_trained = client.app.state.c2l.generator().trained

    model_dir = base_model_dir(settings)
    tok = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    base_loss = name_loss(base, tok, HELD_OUT, NEW)
    rows.append(("base model (no adapter)", base_loss, base_loss))
    for mode, (v1, v2) in paths.items():
        losses = []
        for path in (v1, v2):
            m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), path).eval()
            losses.append(name_loss(m, tok, HELD_OUT, NEW))
        rows.append((f"{mode}: v1 (before rename) -> v2 (after push)", losses[0], losses[1]))
    shutil.rmtree(tmp, ignore_errors=True)

    lines = [SECTION, "", f"Command: `{CMD}`  ", f"Machine: {machine()}  ",
             f"Checkpoint: {args.checkpoint or 'service default'} (trained: {generator_trained}). Loss = mean "
             f"NLL (nats) of the tokens spelling `{NEW}` in held-out code that uses it.", "",
             "| arm | loss with v1 | loss with v2 | v2 - v1 |", "|---|---|---|---|"]
    lines += [f"| {n} | {a:.4f} | {b:.4f} | {b - a:+.4f} |" for n, a, b in rows]
    publish(SECTION, lines, write=not args.no_write)


def _push(client, created: dict, after: str) -> str:
    from service.webhooks import github_signature

    body = json.dumps({"ref": "refs/heads/main", "before": "0" * 39 + "1", "after": after,
                       "repository": {"clone_url": created["repository"]["url"], "default_branch": "main"}}).encode()
    resp = client.post("/webhooks/github", content=body, headers={
        "X-GitHub-Event": "push", "X-Hub-Signature-256": github_signature(created["webhook_secret"], body)})
    return resp.json()["jobs"][0]


if __name__ == "__main__":
    main()
