"""Benchmark adapter generation: ms per adapter (encode, forward, write) and peak memory on this machine.

    python bench/bench_adapter.py [--files 1000] [--repeats 5] [--threads N] [--base-model DIR] [--checkpoint CKPT]

Builds a synthetic Python repository of --files files, extracts it once (not timed here: extraction has
its own benchmark), then generates --repeats adapters per encoder configuration. "cold" clears the
sentence-vector memo before each adapter (a new repository); "warm" keeps it (a regeneration after a push).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {
    "tokens": {"use_sentence": False, "use_tokens": True},
    "sentence": {"use_sentence": True, "use_tokens": False},
    "both": {"use_sentence": True, "use_tokens": True},
    # hypernetwork v2: the base model's first 8 layers over the 2,048-token context in 512-token chunks
    "v2": {"use_sentence": False, "use_tokens": True, "token_source": "hidden_embed", "token_layers": 8,
           "token_chunk": 512},
}


def synthetic_repo(root: Path, n_files: int) -> Path:
    """A deterministic Python package of `n_files` modules with distinct classes, functions and imports."""
    words = ["invoice", "ledger", "sprite", "palette", "tensor", "router", "cache", "parser", "queue", "shard"]
    for i in range(n_files):
        pkg = root / f"pkg{i % 20}"
        pkg.mkdir(parents=True, exist_ok=True)
        w, v = words[i % len(words)], words[(i * 7 + 3) % len(words)]
        (pkg / f"{w}_{i}.py").write_text(
            f'"""{w.title()} helpers number {i}."""\n'
            f"from pkg{(i + 1) % 20}.{v}_{(i + 1) % n_files} import {v.title()}{(i + 1) % n_files}\n\n\n"
            f"class {w.title()}{i}:\n"
            f'    """Holds the {w} state for {v} lookups."""\n\n'
            f"    def load_{w}_{i}(self, path: str, limit: int = {i}) -> dict:\n"
            f'        """Load {w} records from path."""\n'
            f"        return {{}}\n\n\n"
            f"def {v}_to_{w}_{i}(item: {w.title()}{i}, strict: bool = False) -> list[str]:\n"
            f'    """Convert a {v} into {w} rows."""\n'
            f"    return [str(item)]\n"
        )
    return root


def _ms(samples: list[float]) -> float:
    return round(statistics.median(samples), 1)


def run_config(name: str, ctx, args, out_dir: Path) -> dict:
    from hypernet.generator import AdapterGenerator

    t0 = time.perf_counter()
    gen = AdapterGenerator.load(args.checkpoint, args.base_model, init_overrides=CONFIGS[name] if not args.checkpoint else None)
    load_s = time.perf_counter() - t0
    gen.generate(ctx, out_dir / "warmup")  # first call pays one-off kernel/allocator set-up
    rows: dict[str, list[float]] = {}
    for mode in ("cold", "warm") if gen.encoder.sentence is not None else ("cold",):
        for k in range(args.repeats):
            if mode == "cold" and gen.encoder.sentence is not None:
                gen.encoder.sentence._cache.clear()
            art = gen.generate(ctx, out_dir / f"{name}-{mode}-{k}")
            for key, value in art.timings_ms.items():
                rows.setdefault(f"{mode}_{key}", []).append(value)
    return {
        "config": name,
        "load_s": round(load_s, 2),
        "adapter_bytes": art.nbytes,
        "hypernet_params": sum(p.numel() for p in gen.hypernet.parameters()),
        **{key: _ms(values) for key, values in rows.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base-model", type=Path, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--configs", default="tokens,sentence,both")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from hypernet.context import extract_repo

    with tempfile.TemporaryDirectory(prefix="bench-adapter-") as tmp:
        root = synthetic_repo(Path(tmp) / "repo", args.files)
        t0 = time.perf_counter()
        ctx = extract_repo(root)
        extract_s = time.perf_counter() - t0
        results = [run_config(name, ctx, args, Path(tmp) / "out") for name in args.configs.split(",")]
    report = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "load_average_1m": round(os.getloadavg()[0], 2),
        "files": args.files,
        "items": len(ctx.render_items()),
        "extract_s_not_counted": round(extract_s, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
