"""Issue 17: the service's default checkpoint end to end on a public test repository (register, complete,
see the difference). Runs the real service (`code2lora serve`) from a clean HEAD worktree, the official openai
client, greedy completions at identifier cut points of the repository's held-out files."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(os.environ.get("WT", "/work/main"))
repo = sys.argv[1]  # corpus name, e.g. gh/martinblech/xmltodict
port = int(os.environ.get("PORT", "8931"))
out = Path(sys.argv[2])
name = repo.split("/")[-1].replace(".", "-")
src = Path("/work/main/data/public") / repo[3:].replace("/", "+")
dst = Path("/tmp/demo-repos") / name
shutil.rmtree(dst, ignore_errors=True)
shutil.copytree(src, dst)
for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.email=d@x", "-c", "user.name=d", "commit", "-qm", "snapshot"]):
    subprocess.run(cmd, cwd=dst, check=True)
data = Path("/tmp/demo-data")
shutil.rmtree(data, ignore_errors=True)
env = dict(os.environ, CODE2LORA_DATA_DIR=str(data), CODE2LORA_ALLOW_LOCAL_REPOS="true", HF_HUB_OFFLINE="1",
           TRANSFORMERS_OFFLINE="1")
server = subprocess.Popen(["/work/main/.venv/bin/python", "-m", "code2lora.cli", "serve", "--port", str(port),
                           "--log-level", "warning"], cwd=ROOT, env=env)
base = f"http://127.0.0.1:{port}"
record = {"repo": repo}
try:
    for _ in range(300):
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    t0 = time.time()
    r = httpx.post(base + "/repos", json={"url": str(dst), "name": name}, timeout=30)
    r.raise_for_status()
    job = r.json().get("job_id") or r.json().get("job", {}).get("id")
    while True:
        j = httpx.get(f"{base}/jobs/{job}", timeout=10).json()
        if j["status"] in ("succeeded", "failed", "done", "error"):
            break
        time.sleep(2)
    record["job"] = {k: j.get(k) for k in ("status", "message", "error")}
    record["ingest_s"] = round(time.time() - t0, 1)
    versions = httpx.get(f"{base}/repos/{name}/versions", timeout=10).json()
    record["versions"] = versions
    # cut points: the evaluation's own definition, on the files the service held out for this repository
    from hypernet.basemodel import load_tokenizer
    from hypernet.context import extract_repo
    from hypernet.metrics import identifier_cuts, known_identifiers, predicted_identifier, repo_identifiers
    from hypernet.metrics.text import words

    tok = load_tokenizer(None)
    v = versions[0] if isinstance(versions, list) else versions["versions"][0]
    ctx = extract_repo(dst)
    from service.evaluation import heldout_paths, make_split
    from service.settings import Settings

    st = Settings(_env_file=None, data_dir=data)
    split = make_split(ctx, seed=st.eval_split_seed, fraction=st.eval_heldout_fraction,
                       test_fraction=st.eval_heldout_test_fraction, min_files=st.eval_min_files, commit=None)
    held = sorted(heldout_paths(split, ctx))  # the same slice the service held out from the hypernetwork
    record["heldout"] = held
    idents = repo_identifiers(ctx)
    known = known_identifiers(ctx)
    cuts = []
    files = held or sorted(p for p in ctx.files if "test" in p)
    for path in files:
        text = (dst / path).read_text("utf-8", "replace")
        cuts += [c for c in identifier_cuts(path, text, tok, idents, n=4, seed=0, max_prefix_tokens=256)]
    cuts = sorted(cuts, key=lambda c: c.in_prompt)[:16]
    from openai import OpenAI

    client = OpenAI(base_url=base + "/v1", api_key="unused")
    rows = []
    for c in cuts:
        row = {"path": c.path, "target": c.target, "in_prompt": c.in_prompt,
               "prompt_tail": "\n".join(c.prefix_text.split("\n")[-3:])}
        # the service as served (repository-vocabulary decoding on by default), the same adapter with plain
        # decoding, and the base model
        for key, model, extra in ((name, name, {}), (f"{name} plain", name, {"repo_vocabulary": False}),
                                  ("base", "base", {})):
            resp = client.completions.create(model=model, prompt=c.prefix_text, max_tokens=10, temperature=0,
                                             extra_body=extra)
            row[key] = resp.choices[0].text
            row[f"{key} identifier"] = predicted_identifier(c, row[key])
        rows.append(row)
    record["completions"] = rows
    record["differ"] = sum(r[name] != r["base"] for r in rows)
    for key, label in ((name, "own"), (f"{name} plain", "own_plain"), ("base", "base")):
        record[f"{label}_exact"] = sum(r[f"{key} identifier"] == r["target"] for r in rows)
        record[f"{label}_invented"] = sum(r[f"{key} identifier"] is not None and r[f"{key} identifier"] not in known
                                          and r[f"{key} identifier"] not in words(c.prefix_text)
                                          for r, c in zip(rows, cuts, strict=True))
    record["cuts"] = len(rows)
finally:
    server.terminate()
    server.wait(30)
out.write_text(json.dumps(record, indent=1, default=str))
print(json.dumps({k: v for k, v in record.items() if k in ("job", "ingest_s", "differ", "cuts") or
                  k.endswith(("_exact", "_invented"))}))
