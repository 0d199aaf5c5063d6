"""`code2lora adapt REPO_PATH --out DIR`: extract a repository, generate its LoRA adapter, write it."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def adapt(
    repo_path: Path = typer.Argument(..., exists=True, file_okay=False, help="Repository checkout to read."),
    out: Path = typer.Option(..., "--out", help="Folder to write the adapter into (as <out>/<sha256>/)."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Hypernet checkpoint (default: untrained, a no-op)."),
    base_model: Path = typer.Option(None, "--base-model", help="HF causal-LM folder (default: prepared SmolLM2)."),
) -> None:
    """Extract, encode, generate and write one PEFT adapter; print its metadata as JSON."""
    from hypernet.context import extract_repo
    from hypernet.generator import AdapterGenerator

    generator = AdapterGenerator.load(checkpoint, base_model)
    if not generator.trained:
        typer.echo("warning: no --checkpoint, the untrained hypernet writes a no-op adapter", err=True)
    artifact = generator.generate(extract_repo(repo_path), out)
    typer.echo(json.dumps({
        "path": str(artifact.path),
        "sha256": artifact.sha256,
        "hypernet_version": artifact.hypernet_version,
        "context_digest": artifact.context_digest,
        "rank": artifact.rank,
        "bytes": artifact.nbytes,
        "timings_ms": {k: round(v, 1) for k, v in artifact.timings_ms.items()},
    }, indent=2))


def register(app: typer.Typer) -> None:
    """Add `adapt`."""
    app.command()(adapt)
