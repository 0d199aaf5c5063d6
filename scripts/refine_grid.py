"""Compare refinement variants on a few repositories in one process (the base model loaded once, each repository's
generated adapter and its scores computed once), writing one `code2lora refine --json`-shaped file per
(variant, repository) so that `scripts/refine_summary.py` summarises each variant.

    python scripts/refine_grid.py --out runs/grid --chunks 16 \
        --variant default='{}' --variant klall='{"kl_identifiers": true}' data/public/sloria+environs ...

A variant is a name and a JSON object of `hypernet.refine.RefineConfig` fields over the service's settings.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from refine_summary import EXTRA_KEYS  # this folder's sibling (the script runs as `python scripts/refine_grid.py`)

from code2lora.commands.refine import DELTA_KEYS

SERVICE_KEYS = ("loss", "ident_loss", "ident_em", "invented_rate")  # scored again with the service's budget


def _split_ident_loss(model, tokenizer, heldout, ctx, seen, arms, budget) -> dict[str, dict[str, float]]:
    """Identifier loss on the scoring's own windows (`score_arms`'s choice), split into names the context files
    define ("seen") and names only the held-out files define ("unseen")."""
    from hypernet.metrics import identifier_spans, mark_tokens, repo_identifiers
    from hypernet.metrics.cuts import Chunk, text_chunks, tokenize
    from hypernet.metrics.generate import chunk_losses
    from hypernet.metrics.score import _pick_files

    files = _pick_files(heldout, budget)
    full, seen_names = repo_identifiers(ctx), repo_identifiers(seen)
    chunks = text_chunks(files, tokenizer, frozenset(full), n=budget.chunks, seq_len=budget.seq_len,
                         seed=budget.seed)
    offsets = {p: tokenize(tokenizer, files[p])[1] for p in {c.path for c in chunks}}
    out: dict[str, dict[str, float]] = {a: {} for a in arms}
    for part, names in (("seen", seen_names), ("unseen", full - seen_names)):
        marks = {p: mark_tokens(o, identifier_spans(files[p], names)) for p, o in offsets.items()}
        marked = [Chunk(c.path, c.ids, marks[c.path][c.start: c.start + len(c.ids)], c.start) for c in chunks]
        for arm, (tensors, scaling) in arms.items():
            rows = chunk_losses(model, marked, adapter=tensors, scaling=scaling, batch_size=budget.batch_size)
            n = sum(r["n_ident"] for r in rows)
            out[arm][f"ident_loss_{part}"] = sum(r["ident_ce_sum"] for r in rows) / n if n else None
            out[arm][f"ident_tokens_{part}"] = n
    return out


def main() -> None:
    """Run every variant on every repository; skip (variant, repository) pairs whose file exists."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repos", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variant", action="append", default=[], help="name=JSON of RefineConfig fields")
    ap.add_argument("--chunks", type=int, default=None, help="held-out loss windows (default: the service's)")
    ap.add_argument("--cuts", type=int, default=None, help="identifier cut points (default: the service's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--service-budget-too", action="store_true",
                    help="with --chunks/--cuts: also score with the service's budget (keys ending in _service)")
    args = ap.parse_args()

    import torch

    from hypernet.basemodel import load_base_model, load_tokenizer
    from hypernet.context import extract_repo
    from hypernet.generator import AdapterGenerator
    from hypernet.metrics import known_identifiers, repo_identifiers, score_arms
    from hypernet.refine import refine_adapter
    from service import evaluation
    from service.jobs.refine import refine_config
    from service.models import base_model_dir, default_checkpoint
    from service.settings import Settings

    torch.set_num_threads(args.threads)
    settings = Settings()
    budget = service_budget = evaluation.metric_budget(settings)
    if args.chunks:
        budget = replace(budget, chunks=args.chunks)
    if args.cuts is not None:
        budget = replace(budget, cuts=args.cuts)
    variants = [(v.split("=", 1)[0], json.loads(v.split("=", 1)[1])) for v in args.variant] or [("default", {})]
    model_dir, ckpt = base_model_dir(settings), default_checkpoint(settings)
    generator = AdapterGenerator.load(ckpt, model_dir)
    scaling = generator.hypernet.config.lora_alpha / generator.hypernet.config.rank
    model, tokenizer = load_base_model(model_dir), load_tokenizer(model_dir)
    clean = evaluation._clean
    for repo_path in args.repos:
        todo = [(n, o) for n, o in variants if not (args.out / n / f"{repo_path.name}.json").exists()]
        if not todo:
            continue
        t0 = time.perf_counter()
        ctx = extract_repo(repo_path, max_file_bytes=settings.max_file_bytes)
        split = evaluation.make_split(ctx, seed=settings.eval_split_seed, fraction=settings.eval_heldout_fraction,
                                      test_fraction=settings.eval_heldout_test_fraction,
                                      min_files=settings.eval_min_files)
        held = evaluation.heldout_paths(split, ctx)
        reason = evaluation.too_small_reason(split, ctx)
        if reason:
            print(f"{repo_path.name}: skipped, {reason}", flush=True)
            continue
        seen = evaluation.context_slice(ctx, held)
        heldout_texts = evaluation.read_texts(repo_path, held, settings.max_file_bytes)
        context_texts = evaluation.read_texts(repo_path, set(seen.files), settings.max_file_bytes)
        generated = generator.lora(generator.encode(seen))
        first = score_arms(model, tokenizer, heldout_texts, ctx,
                           {"base": (None, 1.0), "generated": (generated, scaling)}, budget=budget)
        parts = _split_ident_loss(model, tokenizer, heldout_texts, ctx, seen,
                                  {"base": (None, 1.0), "generated": (generated, scaling)}, budget)
        for a in ("base", "generated"):
            first[a].update(parts[a])
        if args.service_budget_too:
            svc = score_arms(model, tokenizer, heldout_texts, ctx, {"generated": (generated, scaling)},
                             budget=service_budget)["generated"]
            first["generated"].update({f"{k}_service": svc[k] for k in SERVICE_KEYS})
        prep_s = time.perf_counter() - t0
        for name, over in todo:
            cfg = replace(refine_config(settings), **over)
            t1 = time.perf_counter()
            result = refine_adapter(model, tokenizer, generated, scaling, context_texts, repo_identifiers(seen), cfg,
                                    known=known_identifiers(seen))
            refine_s = time.perf_counter() - t1
            second = score_arms(model, tokenizer, heldout_texts, ctx, {"refined": (result.tensors, scaling)},
                                budget=budget)
            second["refined"].update(_split_ident_loss(model, tokenizer, heldout_texts, ctx, seen,
                                                       {"refined": (result.tensors, scaling)}, budget)["refined"])
            if args.service_budget_too:
                svc_ref = score_arms(model, tokenizer, heldout_texts, ctx, {"refined": (result.tensors, scaling)},
                                     budget=service_budget)["refined"]
                second["refined"].update({f"{k}_service": svc_ref[k] for k in SERVICE_KEYS})
            gen_s, ref_s = clean(first["generated"]), clean(second["refined"])
            delta = {k: round(ref_s[k] - gen_s[k], 6) for k in (*DELTA_KEYS, *EXTRA_KEYS)
                     if isinstance(ref_s.get(k), (int, float)) and isinstance(gen_s.get(k), (int, float))}
            out = {"repo": str(repo_path.resolve()), "variant": name, "overrides": over,
                   "base": clean(first["base"]), "generated": gen_s, "refined": ref_s,
                   "refined_minus_generated": delta,
                   "refine": {**result.metrics, "steps": result.steps, "seconds": round(result.seconds, 2),
                              "stopped_early": result.stopped_early, "config": result.config},
                   "budget": budget.to_json(),
                   "wall_s": {"prepare": round(prep_s, 2), "refine": round(refine_s, 2),
                              "total": round(prep_s + time.perf_counter() - t1, 2)}}
            (args.out / name).mkdir(parents=True, exist_ok=True)
            (args.out / name / f"{repo_path.name}.json").write_text(json.dumps(out, indent=2) + "\n")
            print(f"{name:>14} {repo_path.name:<34} ident {delta.get('ident_loss', float('nan')):+.3f} "
                  f"(seen {delta.get('ident_loss_seen', float('nan')):+.3f}, "
                  f"unseen {delta.get('ident_loss_unseen', float('nan')):+.3f}) "
                  f"loss {delta.get('loss', float('nan')):+.3f} steps {result.steps} ({result.metrics['stopped']}) "
                  f"{refine_s:.0f}s", flush=True)


if __name__ == "__main__":
    main()
