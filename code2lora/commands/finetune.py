"""`code2lora train opd|tropd|rl|sft --config FILE`: offline fine-tuning of a LoRA (or weights) of a base model.

The commands join the `train` group (`code2lora.commands.train.train_app`); `code2lora finetune opd ...` stays as
an alias group, so older scripts and docs keep working.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from code2lora.commands.train import train_app

METHODS = ("sft", "opd", "tropd", "rl")


def _make_command(method: str):
    def command(
        config: Path = typer.Option(..., "--config", "-c", exists=True, dir_okay=False, help="Run config (JSON)."),
        steps: int = typer.Option(None, help="Override the number of steps."),
        out_dir: str = typer.Option(None, "--out-dir", help="Override the output folder."),
        fresh: bool = typer.Option(False, "--fresh", help="Ignore any resume state and start from step 0."),
        stop_after: int = typer.Option(None, help="Stop after this many steps (resume later)."),
        threads: int = typer.Option(None, help="torch threads (default: the config's)."),
    ) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from training.finetune.config import load_config
        from training.finetune.trainer import train_from_config

        cfg = load_config(config, method=method, steps=steps, out_dir=out_dir, threads=threads)
        last = train_from_config(cfg, resume=not fresh, stop_after=stop_after)
        typer.echo(json.dumps(last, indent=1))

    command.__doc__ = {
        "sft": "SFT: next-token loss on teacher samples or the repository's own text.",
        "opd": "On-policy distillation: reverse KL to the teacher on the student's own samples.",
        "tropd": "Trust-region OPD: clipped ratios, outlier-robust token credit, teacher-prefix guidance.",
        "rl": "GRPO with a surface-metric reward (chrF, exact match, edit similarity); optional OPD mix.",
    }[method] + " Resumes from OUT_DIR/state.pt unless --fresh."
    return command


def register(app: typer.Typer) -> None:
    """Add `train opd|tropd|rl|sft` to the shared `train` group, and the same commands as `finetune ...`."""
    alias = typer.Typer(no_args_is_help=True, help="Fine-tune a base model: SFT, OPD, TrOPD, RL (GRPO); the same "
                        "commands as `code2lora train opd|tropd|rl|sft`.")
    app.add_typer(alias, name="finetune")
    for method in METHODS:
        for group in (alias, train_app):
            group.command(method)(_make_command(method))
