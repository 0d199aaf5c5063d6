"""Per-token latency through the service's local engine vs the same model run directly in transformers.

One process, one run: the bundled SmolLM2-135M-Instruct in float32 (what the local engine loads), the same
prompt and the same number of greedy tokens, the same torch thread count. The service side goes through the
whole HTTP stack in process (FastAPI TestClient: routing, auth, limits, model resolution, the engine's
scheduler, SSE); the direct side is a plain KV-cache greedy loop over `model(...)`. Alternating repeats,
medians reported. Time to first token = request sent -> first streamed chunk with text (direct: prefill + the
first token); per token = (total - first token) / (tokens - 1).

Run: python bench/bench_latency.py [--tokens 48] [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_service import make_repo, wait
from bench.common import machine, publish

SECTION = "## Latency: service vs transformers"
CMD = "python bench/bench_latency.py"
PROMPT = "import os\nimport sys\n\n\ndef read_config(path):\n    \"\"\"Read a configuration file and return a dict.\"\"\"\n"


def direct(model, tokenizer, n: int) -> tuple[float, float]:
    """(seconds to the first token, seconds per later token) of a greedy KV-cache loop, exactly n tokens."""
    import torch

    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        first = time.perf_counter() - t0
        past = out.past_key_values
        for _ in range(n - 1):
            out = model(input_ids=token, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[:, -1:].argmax(-1)
        total = time.perf_counter() - t0
    return first, (total - first) / max(1, n - 1)


def service(client, model: str, n: int) -> tuple[float, float, int]:
    """(seconds to the first streamed text, seconds per later token, tokens) of one streamed completion."""
    body = {"model": model, "prompt": PROMPT, "max_tokens": n, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = None
    tokens = 0
    with client.stream("POST", "/v1/completions", json=body) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text") and first is None:
                first = time.perf_counter() - t0
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    total = time.perf_counter() - t0
    first = first if first is not None else total
    return first, (total - first) / max(1, tokens - 1), tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from fastapi.testclient import TestClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from service.api.app import create_app
    from service.models import base_model_dir
    from service.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="c2l-bench-latency-"))
    settings = Settings(_env_file=None, data_dir=tmp / "data", allow_local_repos=True, engine="local",
                        json_logs=False)
    model_dir = base_model_dir(settings)
    plain = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    load = os.getloadavg()[0]
    samples: dict[str, list[tuple[float, float]]] = {"direct": [], "service: base": [], "service: adapter": []}
    counts: list[int] = []
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as client:
        created = client.post("/repos", json={"url": str(make_repo(tmp / "repo", 50)), "name": "repo"}).json()
        wait(client, created["job"]["id"])
        service(client, "repo", 2)  # warm both sides (first-call allocations, the adapter's first load)
        direct(plain, tokenizer, 2)
        for _ in range(args.repeats):
            for arm, model in (("service: base", "base"), ("service: adapter", "repo")):
                first, per, n = service(client, model, args.tokens)
                samples[arm].append((first, per))
                counts.append(n)
            samples["direct"].append(direct(plain, tokenizer, min(counts)))
    shutil.rmtree(tmp, ignore_errors=True)

    def med(arm: str, k: int) -> float:
        return statistics.median(s[k] for s in samples[arm])

    d_per = med("direct", 1)
    lines = [SECTION, "", f"Command: `{CMD} --tokens {args.tokens} --repeats {args.repeats}`  ",
             f"Machine: {machine()}; 1-minute load average {load:.1f} at the start; torch threads "
             f"{torch.get_num_threads()}  ",
             "Bundled SmolLM2-135M-Instruct, float32, the same prompt (6 lines of Python) and greedy tokens "
             f"({min(counts)}-{max(counts)} generated) on both sides, in one process; medians of {args.repeats} "
             "alternating repeats. Service = in-process HTTP (TestClient) through the local engine, streamed; "
             "direct = a KV-cache greedy loop over the transformers model.", "",
             "| path | first token (ms) | per later token (ms) | vs direct, per token |", "|---|---:|---:|---:|"]
    for arm in ("direct", "service: base", "service: adapter"):
        first, per = med(arm, 0), med(arm, 1)
        lines.append(f"| {arm} | {first * 1e3:.0f} | {per * 1e3:.1f} | {per / d_per:.2f}x |")
    publish(SECTION, lines, write=not args.no_write)


if __name__ == "__main__":
    main()
