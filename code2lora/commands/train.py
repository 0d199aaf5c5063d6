"""`code2lora train hypernet --config FILE`: end-to-end hypernetwork training (or the shared-LoRA control)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

# Module level so `code2lora.commands.finetune` can add `train opd|tropd|rl|sft` to the same group.
train_app = typer.Typer(no_args_is_help=True, help="Train the hypernetwork (and its control arms), or fine-tune "
                        "a base model (SFT, OPD, TrOPD, RL).")


def register(app: typer.Typer) -> None:
    """Add the `train` command group."""

    @train_app.command("hypernet")
    def hypernet(
        config: Path = typer.Option(..., "--config", "-c", exists=True, dir_okay=False, help="Training config (JSON)."),
        steps: int = typer.Option(None, help="Override the number of steps."),
        out_dir: str = typer.Option(None, "--out-dir", help="Override the output folder."),
        work_dir: str = typer.Option(None, "--work-dir", help="Override the cache / resume folder."),
        fresh: bool = typer.Option(False, "--fresh", help="Ignore any resume state and start from step 0."),
        stop_after: int = typer.Option(None, help="Stop after this many steps (resume later)."),
        threads: int = typer.Option(None, help="torch threads (default: the config's)."),
    ) -> None:
        """Train per CONFIG; resumes from the last saved state unless --fresh."""
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from training.hypernet.config import load_config
        from training.hypernet.run import train_from_config

        cfg = load_config(config, steps=steps, out_dir=out_dir, work_dir=work_dir, threads=threads)
        last = train_from_config(cfg, resume=not fresh, stop_after=stop_after)
        typer.echo(json.dumps(last, indent=1))

    app.add_typer(train_app, name="train")
