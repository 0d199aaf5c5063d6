"""Repository-vocabulary decoding's cost in the local engine: tokens/s with and without it, in one run.

    python bench/bench_vocab.py [--repo DIR] [--tokens 24] [--repeats 3] [--threads 1]

The vocabulary is that of --repo (default: this project's own `hypernet/` package), as the service builds it at
ingest (`hypernet.metrics.known_identifiers` of the extracted context); the prompts are 8 code prefixes cut right
before an identifier use in that repository's files. Both runs serve the same 8 requests batched, greedy, on the
base model; the ratio is vocabulary / plain tokens per second (1.0 = free).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.bench_engine import tokens_per_s  # noqa: E402
from service.engines import GenerationRequest, SamplingParams  # noqa: E402
from service.engines.local import LocalEngine, load_model  # noqa: E402


def prompts_from(root: Path, count: int) -> list[str]:
    """`count` prefixes of the repository's Python files, each ending right before `self.` or `return `."""
    out: list[str] = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(errors="replace")
        for marker in ("return ", "self."):
            at = text.find(marker, 400)
            if at > 0:
                out.append(text[max(0, at - 600): at + len(marker)])
                break
        if len(out) == count:
            break
    return out


def main() -> None:
    """Run the benchmark and print a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1] / "hypernet")
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from hypernet.basemodel import prepare_bundled
    from hypernet.context.repo import extract_repo
    from hypernet.metrics import known_identifiers

    ctx = extract_repo(args.repo)
    names = frozenset(known_identifiers(ctx))
    prompts = prompts_from(args.repo, 8)
    engine = LocalEngine(*load_model(str(prepare_bundled())), slots=1)
    plain = SamplingParams(max_tokens=args.tokens, temperature=0.0, ignore_eos=True)
    vocab = SamplingParams(max_tokens=args.tokens, temperature=0.0, ignore_eos=True, vocabulary=names)
    runs: dict[str, list[float]] = {"plain": [], "vocabulary": []}
    tokens_per_s(engine, [GenerationRequest(p, vocab) for p in prompts[:1]])  # warm-up (builds the token index)
    for _ in range(args.repeats):  # interleaved, so machine load hits both alike
        runs["plain"].append(tokens_per_s(engine, [GenerationRequest(p, plain) for p in prompts]))
        runs["vocabulary"].append(tokens_per_s(engine, [GenerationRequest(p, vocab) for p in prompts]))
    med = {k: statistics.median(v) for k, v in runs.items()}
    summary = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
               "threads": args.threads, "repo": str(args.repo), "names": len(names), "prompts": len(prompts),
               "tokens": args.tokens, "tok_per_s": {k: round(v, 2) for k, v in med.items()},
               "ratio_vocabulary_over_plain": round(med["vocabulary"] / med["plain"], 3), "runs": runs}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
