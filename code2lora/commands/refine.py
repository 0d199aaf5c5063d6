"""`code2lora refine REPO_PATH [--json OUT]`: the service's refinement, offline, on one repository checkout.

Splits the repository exactly as the service does (held-out slice never shown to the hypernetwork or to training),
generates the adapter from the rest (default: the shipped checkpoint on the bundled model), scores it with the
base model on the held-out slice, refines it on the context files, scores the refined adapter on the same cuts,
and prints both score dicts, the differences and the wall times. The comparison over many repositories is a
loop over this command (see docs/EVAL.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

DELTA_KEYS = ("loss", "ident_loss", "ident_em", "invented_rate", "line_em", "line_edit_sim")


def refine_command(
    repo_path: Path = typer.Argument(..., exists=True, file_okay=False, help="Repository checkout to read."),
    json_out: Path = typer.Option(None, "--json", help="Also write the result as JSON to this file."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Hypernet checkpoint (default: the service's: "
                                    "CODE2LORA_HYPERNET_CHECKPOINT, else the shipped one for the bundled model)."),
    base_model: Path = typer.Option(None, "--base-model", help="HF causal-LM folder (default: the service's)."),
    steps: int = typer.Option(None, help="Refinement steps (default: CODE2LORA_REFINE_STEPS)."),
    max_seconds: float = typer.Option(None, help="Refinement wall-time cap (default: CODE2LORA_REFINE_MAX_SECONDS)."),
    lr: float = typer.Option(None, help="Learning rate (default: CODE2LORA_REFINE_LR)."),
    adapter_out: Path = typer.Option(None, "--adapter-out", help="Write the generated and refined adapters here."),
    threads: int = typer.Option(None, help="torch threads (default: torch's)."),
    method: str = typer.Option(None, help="supervised or rl (default: CODE2LORA_REFINE_METHOD)."),
) -> None:
    """Generate, score, refine and score again one repository's adapter; print the numbers as JSON."""
    if method is not None and method not in ("supervised", "rl"):
        raise typer.BadParameter(f"{method!r}: choose supervised or rl", param_hint="--method")
    import torch

    from hypernet.adapter import write_adapter
    from hypernet.basemodel import load_base_model, load_tokenizer
    from hypernet.context import extract_repo
    from hypernet.generator import AdapterGenerator
    from hypernet.metrics import known_identifiers, repo_identifiers, score_arms
    from hypernet.refine import refine_adapter
    from service import evaluation
    from service.jobs.refine import refine_config
    from service.models import base_model_dir, default_checkpoint
    from service.settings import Settings

    if threads:
        torch.set_num_threads(threads)
    overrides = {"base_model_path": base_model} if base_model else {}
    if checkpoint:
        overrides["hypernet_checkpoint"] = checkpoint
    settings = Settings(**overrides)  # type: ignore[arg-type]  # a dict of two Path fields; the plugin sees dict[str, Path] as any field
    t_start = time.perf_counter()
    wall: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        wall[name] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    ctx = extract_repo(repo_path, max_file_bytes=settings.max_file_bytes)
    split = evaluation.make_split(ctx, seed=settings.eval_split_seed, fraction=settings.eval_heldout_fraction,
                                  test_fraction=settings.eval_heldout_test_fraction, min_files=settings.eval_min_files)
    held = evaluation.heldout_paths(split, ctx)
    reason = evaluation.too_small_reason(split, ctx)
    if reason:
        raise typer.BadParameter(f"{repo_path}: {reason}", param_hint="REPO_PATH")
    seen = evaluation.context_slice(ctx, held)
    heldout_texts = evaluation.read_texts(repo_path, held, settings.max_file_bytes)
    context_texts = evaluation.read_texts(repo_path, set(seen.files), settings.max_file_bytes)
    lap("extract", t0)

    t0 = time.perf_counter()
    model_dir = base_model_dir(settings)
    ckpt = default_checkpoint(settings)
    if ckpt is None:
        typer.echo("warning: no checkpoint for this base model: the untrained hypernet writes a no-op adapter", err=True)
    generator = AdapterGenerator.load(ckpt, model_dir)
    generated = generator.lora(generator.encode(seen))
    scaling = generator.hypernet.config.lora_alpha / generator.hypernet.config.rank
    lap("generate", t0)

    t0 = time.perf_counter()
    model, tokenizer = load_base_model(model_dir), load_tokenizer(model_dir)
    lap("load_base_model", t0)
    budget = evaluation.metric_budget(settings)

    t0 = time.perf_counter()
    first = score_arms(model, tokenizer, heldout_texts, ctx, {"base": (None, 1.0), "generated": (generated, scaling)},
                       budget=budget)
    lap("score_generated", t0)

    t0 = time.perf_counter()
    cfg = refine_config(settings, {"steps": steps, "max_seconds": max_seconds, "lr": lr, "method": method})
    result = refine_adapter(model, tokenizer, generated, scaling, context_texts, repo_identifiers(seen), cfg,
                            known=known_identifiers(seen))
    lap("refine", t0)

    t0 = time.perf_counter()
    second = score_arms(model, tokenizer, heldout_texts, ctx, {"refined": (result.tensors, scaling)}, budget=budget)
    lap("score_refined", t0)
    wall["total"] = round(time.perf_counter() - t_start, 2)

    clean = evaluation._clean
    gen_s, ref_s = clean(first["generated"]), clean(second["refined"])
    delta = {k: round(ref_s[k] - gen_s[k], 6) for k in DELTA_KEYS
             if isinstance(ref_s.get(k), (int, float)) and isinstance(gen_s.get(k), (int, float))}
    out = {
        "repo": str(repo_path.resolve()), "files": len(ctx.files), "context_files": len(seen.files),
        "heldout_files": sorted(held), "checkpoint": str(ckpt) if ckpt else None, "base_model": str(model_dir),
        "base": clean(first["base"]), "generated": gen_s, "refined": ref_s, "refined_minus_generated": delta,
        "refine": {**result.metrics, "steps": result.steps, "seconds": round(result.seconds, 2),
                   "stopped_early": result.stopped_early, "config": result.config},
        "budget": budget.to_json(), "wall_s": wall,
    }
    if adapter_out is not None:
        for name, tensors in (("generated", generated), ("refined", result.tensors)):
            files = write_adapter(tensors, Path(adapter_out) / name, base_model=str(model_dir),
                                  lora_alpha=generator.hypernet.config.lora_alpha)
            out[f"{name}_adapter"] = str(files.path)
    text = json.dumps(out, indent=2)
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(text + "\n")
    typer.echo(text)


def register(app: typer.Typer) -> None:
    """Add `refine`."""
    app.command("refine")(refine_command)
