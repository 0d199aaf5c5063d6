"""`code2lora eval --checkpoint C --repos ...`: every arm on held-out repositories -> JSON, markdown, plots,
side_by_side.md (generated identifier completions per arm)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the `eval` command."""

    @app.command("eval")
    def eval_command(
        checkpoint: Path = typer.Option(..., "--checkpoint", exists=True, dir_okay=False, help="hypernet.safetensors"),
        repos: list[str] = typer.Option(["test"], "--repos", help="test/val/train, corpus names, or repository paths."),
        out: Path = typer.Option(None, "--out", help="Output folder (default: <checkpoint dir>/eval)."),
        shared_lora: Path = typer.Option(None, "--shared-lora", help="PEFT folder of the shared-LoRA control arm."),
        config: Path = typer.Option(None, "--config", help="Training config (default: train_config.json beside C)."),
        max_repos: int = typer.Option(None, help="Evaluate at most this many repositories."),
        per_repo_lora_repos: int = typer.Option(3, help="Repositories that also get a directly trained LoRA."),
        per_repo_steps: int = typer.Option(15, help="Steps of each per-repository LoRA."),
        per_repo_lr: float = typer.Option(1e-3, help="Learning rate of each per-repository LoRA."),
        per_repo_chunks: int = typer.Option(4, help="Context-file chunks each per-repository LoRA trains on."),
        prompt_chunks: int = typer.Option(2, help="Chunks per repository for the context-in-prompt arm (0: off)."),
        prompt_budget: int = typer.Option(256, help="Rendered-context tokens in the prompt arm."),
        lines: int = typer.Option(4, help="Line-completion examples per repository."),
        asserts: int = typer.Option(4, help="Assertion-completion examples per repository."),
        cuts: int = typer.Option(8, "--cuts", help="Identifier cut points per repository and cut mode (0: off)."),
        cut_mode: str = typer.Option("boundary", "--cut-mode", help="boundary (prompt ends before the identifier), "
                                     "inside (after its first token) or both."),
        cut_prefix: int = typer.Option(256, "--cut-prefix", help="Prompt tokens before each cut point."),
        gen_lines: int = typer.Option(4, "--gen-lines", help="Generated next-line cases per repository (0: off)."),
        side_by_side: int = typer.Option(3, "--side-by-side", help="Cut points per repository in side_by_side.md."),
        own_rank: bool = typer.Option(True, "--own-rank/--no-own-rank", help="Rank each repository's own adapter "
                                      "among all generated ones on its chunks (N^2 top-layer passes)."),
        bootstrap: int = typer.Option(2000, help="Bootstrap resamples."),
        threads: int = typer.Option(2, help="torch threads."),
        extra_arm: list[str] = typer.Option([], "--extra-arm", help="NAME=DIR: PEFT adapters, one folder per "
                                            "repository (as --export-adapters names them), scored as arm NAME."),
        export_adapters: Path = typer.Option(None, "--export-adapters", help="Write each repository's generated "
                                             "adapter here (PEFT), e.g. as a starting point for fine-tuning."),
        skip_arm: list[str] = typer.Option([], "--skip-arm", help="Arm left out entirely (repeatable)."),
        gen_skip_arm: list[str] = typer.Option([], "--gen-skip-arm", help="Arm scored on losses only, without "
                                               "generated completions (repeatable; generation is the slow part). "
                                               "Names are exact: ARM skips its plain decoding, ARM+vocab its "
                                               "repository-vocabulary decoding."),
        vocab_decoding: list[str] = typer.Option([], "--vocab-decoding", help="Also complete every generation arm "
                                                 "with repository-vocabulary decoding at this penalty (inf: names "
                                                 "outside the repository's are masked); arms ARM+vocab[BIAS]."),
        name_beam: int = typer.Option(0, "--name-beam", min=0, help="With --vocab-decoding: also choose each "
                                      "name a completion starts with whole, by a beam of this width over the "
                                      "allowed names; arms ARM+vocab[BIAS]+beamW."),
        amplify: list[float] = typer.Option([], "--amplify", help="Also score the own adapter with its "
                                            "repository-specific part amplified by this factor, ref + A (own − ref) "
                                            "(repeatable); arms own_xA."),
        amplify_ref: Path = typer.Option(None, "--amplify-ref", help="PEFT adapter folder used as ref by --amplify "
                                         "(then average_xA too); default: the run's average adapter."),
    ) -> None:
        """Evaluate a hypernet checkpoint against the control arms."""
        if cut_mode not in ("boundary", "inside", "both"):
            raise typer.BadParameter(f"{cut_mode!r}: boundary, inside or both", param_hint="--cut-mode")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from training.eval.main import NoRepositories, evaluate_checkpoint
        from training.eval.report import markdown
        from training.eval.run import EvalOptions

        opts = EvalOptions(repos=list(repos), max_repos=max_repos, lines_per_repo=lines, asserts_per_repo=asserts,
                           prompt_budget=prompt_budget, prompt_chunks=prompt_chunks,
                           per_repo_lora_repos=per_repo_lora_repos, per_repo_steps=per_repo_steps, per_repo_lr=per_repo_lr,
                           per_repo_chunks=per_repo_chunks,
                           cuts_per_repo=cuts, cut_mode=cut_mode, cut_prefix_tokens=cut_prefix,
                           gen_lines_per_repo=gen_lines, side_by_side=side_by_side, own_rank=own_rank,
                           bootstrap=bootstrap, threads=threads, extra_arms=_parse_arms(extra_arm),
                           export_adapters=str(export_adapters) if export_adapters else None,
                           skip_arms=list(skip_arm), gen_skip_arms=list(gen_skip_arm),
                           vocab_biases=[_parse_bias(b) for b in vocab_decoding], name_beam=name_beam,
                           amplify=list(amplify), amplify_ref=str(amplify_ref) if amplify_ref else None)
        try:
            report = evaluate_checkpoint(checkpoint, opts, out or checkpoint.parent / "eval", shared_lora, config)
        except NoRepositories as exc:
            raise typer.BadParameter(str(exc), param_hint="--repos") from None
        typer.echo(markdown(report))


def _parse_bias(text: str) -> float:
    """"inf" or a positive number of nats; anything else is a usage error."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise typer.BadParameter(f"{text!r}: a positive number or inf", param_hint="--vocab-decoding")
    return value


def _parse_arms(specs: list[str]) -> dict[str, str]:
    """["NAME=DIR", ...] -> {NAME: DIR}; a bad spec or a missing folder is a usage error."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise typer.BadParameter(f"{spec!r}: expected NAME=DIR", param_hint="--extra-arm")
        if not Path(folder).is_dir():
            raise typer.BadParameter(f"{folder}: no such folder", param_hint="--extra-arm")
        out[name] = folder
    return out
