"""`code2lora analyze geometry CKPT...`: update-geometry report (ranks, sparsity, W0 overlap, subspace locking)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the `analyze` command group."""
    analyze_app = typer.Typer(no_args_is_help=True, help="Analyse trained updates.")

    @analyze_app.command("geometry")
    def geometry(
        ckpts: list[Path] = typer.Argument(..., exists=True, help="Run folders (checkpoints/step-*), checkpoint "
                                           "folders or PEFT adapter folders."),
        out: Path = typer.Option(Path("geometry-report"), "--out", "-o", help="Report folder."),
        base_model: str = typer.Option(None, "--base-model", help="Base model folder (default: the checkpoint's)."),
        k: int = typer.Option(8, "--top-k", "-k", help="Subspace dimension for overlaps and angles."),
        rel: float = typer.Option(1e-2, help="A weight counts as changed when |dW| > rel * |W0|."),
        max_step: int = typer.Option(None, help="Use checkpoints up to this step (compare runs at equal budget)."),
    ) -> None:
        """Write OUT/report.json, OUT/report.md and plots for each CKPT."""
        from training.geometry import analyze_run, plot_reports, write_report

        cache: dict = {}
        reports = [analyze_run(c, base_model, k, rel, w0_cache=cache, max_step=max_step) for c in ckpts]
        md = write_report(reports, out)
        plot_reports(reports, out)
        typer.echo(md.read_text())

    app.add_typer(analyze_app, name="analyze")
