"""`code2lora models prepare|list`: the base models in the local model cache."""

from __future__ import annotations

from pathlib import Path

import typer

models_app = typer.Typer(no_args_is_help=True, help="Base models in the local cache.")


@models_app.command("prepare")
def prepare(
    cache_dir: Path = typer.Option(None, help="Model cache (default: CODE2LORA_MODEL_CACHE or ~/.cache/code2lora/models)."),
    force: bool = typer.Option(False, help="Convert again even if the folder exists."),
) -> None:
    """Convert the bundled SmolLM2-135M-Instruct GGUF into a bf16 safetensors folder (once)."""
    from hypernet.basemodel import default_model_dir, is_prepared, prepare_bundled

    target = default_model_dir(cache_dir)
    if is_prepared(target) and not force:
        typer.echo(f"already prepared: {target}")
        return
    import time

    typer.echo(f"converting the bundled GGUF (SmolLM2-135M-Instruct, 98 MB) into {target}, once: about 1 minute "
               "on an idle 2-core CPU, up to 3 on a busy one (config, tokenizer and de-quantised weights) ...")
    start = time.monotonic()
    path = prepare_bundled(cache_dir, force=force)
    typer.echo(f"prepared {path} in {time.monotonic() - start:.0f} s")


@models_app.command("list")
def list_(
    cache_dir: Path = typer.Option(None, help="Model cache (default: CODE2LORA_MODEL_CACHE or ~/.cache/code2lora/models)."),
) -> None:
    """List prepared model folders, with architecture and layer count."""
    import json

    from hypernet.basemodel import list_models, model_cache_dir

    found = list_models(cache_dir)
    if not found:
        typer.echo(f"no prepared models in {cache_dir or model_cache_dir()} (run `code2lora models prepare`)")
        return
    for path in found:
        config = json.loads((path / "config.json").read_text())
        arch = ",".join(config.get("architectures") or [config.get("model_type", "?")])
        typer.echo(f"{path}\t{arch}\tlayers={config.get('num_hidden_layers')}\thidden={config.get('hidden_size')}")


def register(app: typer.Typer) -> None:
    """Add the `models` group."""
    app.add_typer(models_app, name="models")
