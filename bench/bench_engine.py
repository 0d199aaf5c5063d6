"""Serving-engine benchmark on the bundled model: mixed-adapter batching, swapping, hot-load.

Each result is a ratio measured within one run (same process, same machine load):
  mixed/base   tokens/s of 8 requests with 8 different adapters in one batch vs the same load on the base model
  mixed/swap   the same 8 adapter requests batched vs served one at a time with an adapter swap each
  hot-load     latency of ensure_loaded for a cold adapter (ms)
Usage: python bench/bench_engine.py [--tokens 32] [--repeats 2] [--targets q_proj,v_proj,...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from service.engines import AdapterRef, GenerationRequest, SamplingParams
from service.engines.local import LocalEngine, load_model

ALL_LINEAR = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
PROMPTS = ["def fibonacci(n):", "import numpy as np\n", "class Stack:\n    def push(self, item):",
           "# parse the config file\n", "async def fetch(url):", "SELECT name FROM users WHERE",
           "func main() {\n", "The capital of France is"]


def make_adapters(model_dir: Path, out: Path, count: int, targets: list[str], rank: int) -> list[Path]:
    """Random rank-``rank`` PEFT adapters (small B, so outputs stay sensible), from one PEFT wrap."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets))
    paths = []
    for i in range(count):
        torch.manual_seed(i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_A" in name:
                    torch.nn.init.kaiming_uniform_(p, a=5 ** 0.5)
                elif "lora_B" in name:
                    p.normal_(0, 0.02)
        model.save_pretrained(out / f"adapter{i}")
        paths.append(out / f"adapter{i}")
    return paths


def tokens_per_s(engine: LocalEngine, reqs: list[GenerationRequest], one_at_a_time: bool = False) -> float:
    """Completion tokens per second for ``reqs``, all submitted together or strictly in turn."""
    async def go() -> int:
        if one_at_a_time:
            total = 0
            for r in reqs:
                total += (await engine.generate([r]))[0].completion_tokens
            return total
        return sum(r.completion_tokens for r in await engine.generate(reqs))

    start = time.perf_counter()
    tokens = asyncio.run(go())
    return tokens / (time.perf_counter() - start)


def main() -> None:
    """Run the benchmark and print a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="HF folder (default: the prepared bundled SmolLM2)")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--targets", default=ALL_LINEAR)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; on a shared 2-core box more threads oversubscribe and run slower")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from hypernet.basemodel import prepare_bundled, resolve_model_dir

    model_dir = resolve_model_dir(args.model) if args.model else prepare_bundled()
    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    adapters = make_adapters(model_dir, work, len(PROMPTS) + 4, args.targets.split(","), args.rank)
    refs = [AdapterRef(f"bench/repo{i}@v1", str(p)) for i, p in enumerate(adapters)]
    params = SamplingParams(max_tokens=args.tokens, temperature=0.0, ignore_eos=True)
    mixed = [GenerationRequest(p, params, refs[i]) for i, p in enumerate(PROMPTS)]
    base = [GenerationRequest(p, params, None) for p in PROMPTS]

    # separate model copies: the engine wraps the Linear layers of the model it serves
    batched = LocalEngine(*load_model(str(model_dir)), slots=len(PROMPTS))
    swapping = LocalEngine(*load_model(str(model_dir)), slots=1)  # one slot: every request swaps adapters
    for r in mixed:
        asyncio.run(batched.ensure_loaded(r.adapter.id, r.adapter.path))
    tokens_per_s(batched, mixed[:2])  # warm-up
    results: dict[str, list[float]] = {"base": [], "mixed": [], "swap": []}
    for _ in range(args.repeats):  # interleaved so background load hits all three alike
        results["base"].append(tokens_per_s(batched, base))
        results["mixed"].append(tokens_per_s(batched, mixed))
        results["swap"].append(tokens_per_s(swapping, mixed, one_at_a_time=True))
        print({k: round(v[-1], 1) for k, v in results.items()}, file=sys.stderr, flush=True)
    asyncio.run(batched.aclose())
    asyncio.run(swapping.aclose())

    hot = LocalEngine(*load_model(str(model_dir)), slots=2)
    asyncio.run(hot.ensure_loaded(refs[-1].id, refs[-1].path))  # first load wraps the Linear layers
    latencies = []
    for ref in refs[len(PROMPTS):-1] + refs[:4]:
        start = time.perf_counter()
        asyncio.run(hot.ensure_loaded(ref.id, ref.path))
        latencies.append((time.perf_counter() - start) * 1000)
    asyncio.run(hot.aclose())

    best = {k: max(v) for k, v in results.items()}
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
                   f"torch {torch.__version__}",
        "model": str(model_dir), "targets": args.targets, "rank": args.rank, "tokens": args.tokens,
        "tokens_per_s": {k: [round(x, 1) for x in v] for k, v in results.items()},
        "mixed_vs_base": round(best["mixed"] / best["base"], 3),
        "mixed_vs_swap": round(best["mixed"] / best["swap"], 2),
        "hot_load_ms": {"median": round(statistics.median(latencies), 1), "max": round(max(latencies), 1)},
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
