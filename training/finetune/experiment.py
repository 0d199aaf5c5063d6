"""The comparison run of docs/TRAINING.md: the same repository, student, teacher and budget for every method
(SFT on the repo's text, SFT on teacher samples, OPD, TrOPD, OPD+RL, ...), then held-out results, stability
statistics, overlaid curves and the update-geometry report.

    python -m training.finetune.experiment --recipe training/finetune/recipes/context_distill.json \
        --repo PATH --out runs/compare --parallel 5
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Arms of the comparison: name -> overrides of the recipe. Same steps, batch, inner steps and lr for all.
ARMS: dict[str, dict[str, Any]] = {
    "sft_text": {"method": "sft", "sft": {"source": "text"}},
    "sft_teacher": {"method": "sft", "sft": {"source": "teacher"}},
    # off-policy counterpart of OPD: the teacher's soft targets on the repository's own text (word-level KD)
    "kd_text": {"method": "sft", "sft": {"source": "text", "soft": True}},
    "opd": {"method": "opd"},
    "tropd": {"method": "tropd"},
    "tropd_noguide": {"method": "tropd", "tropd": {"guide_share": 0.0}},  # trust region + outliers only
    "opd_rl": {"method": "rl", "rl": {"group_size": 2, "reward": "chrf", "opd_weight": 1.0, "rl_weight": 1.0}},
    "rl": {"method": "rl", "rl": {"group_size": 2, "reward": "chrf"}},
    "opd_sparse": {"method": "opd", "opd": {"token_keep": 0.25}},
    "opd_offpolicy": {"method": "opd", "opd": {"offpolicy_share": 1.0}},
    "opd_full": {"method": "opd", "opd": {"form": "full"}},  # exact reverse KL over the vocabulary
    # on-policy samples, forward KL to the teacher's full distribution (mass-covering; GKD with beta = 0)
    "opd_fkl": {"method": "opd", "opd": {"form": "forward"}},
    # credit-sparse: only the quarter of tokens where teacher and student disagree most carry gradient
    "opd_focus": {"method": "opd", "opd": {"focus": 0.25}},
    "opd_full_focus": {"method": "opd", "opd": {"form": "full", "focus": 0.25}},
    # only the quarter of positions where the context makes the teacher most certain (largest entropy drop)
    "opd_full_certain": {"method": "opd", "opd": {"form": "full", "focus": 0.25, "focus_by": "certainty"}},
    "opd_certain": {"method": "opd", "opd": {"focus": 0.25, "focus_by": "certainty"}},
    # every rollout starts with 8 teacher tokens under forward KL (mass-covering), the rest on-policy
    "tropd_guided": {"method": "tropd", "tropd": {"guide_share": 1.0, "guide_tokens": 8}},
    # a fifth of the recipe's learning rate
    "tropd_slow": {"method": "tropd", "lr": 1e-4},
    # short completions, more of them: rollouts stay close to the file's own text
    "opd_short": {"method": "opd", "batch_size": 32, "task": {"completion_tokens": 4}},
    # the teacher is the bare base model with the context (not the starting student with it)
    "opd_base_teacher": {"method": "opd", "teacher": {"student_adapter": False}},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def apply_sets(recipe: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Recipe with `KEY=VALUE` overrides (dotted keys such as task.completion_tokens; VALUE parsed as JSON when it
    parses, else kept as a string), applied before the arms' own overrides."""
    out = copy.deepcopy(recipe)
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set wants KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def arm_configs(recipe: dict[str, Any], arms: list[str], out: Path, repo: str | None,
                init_adapter: str | None = None) -> dict[str, Path]:
    """Write one config per arm under out/configs; returns arm -> config path."""
    (out / "configs").mkdir(parents=True, exist_ok=True)
    paths = {}
    for arm in arms:
        cfg = _merge(recipe, ARMS[arm])
        cfg["name"], cfg["out_dir"], cfg["progress"] = arm, str(out / arm), False
        if repo:
            cfg.setdefault("task", {})["repo"] = repo
        if init_adapter:
            cfg.setdefault("student", {})["init_adapter"] = init_adapter
        paths[arm] = out / "configs" / f"{arm}.json"
        paths[arm].write_text(json.dumps(cfg, indent=1) + "\n")
    return paths


def launch(paths: dict[str, Path], parallel: int, out: Path, deadline: float | None = None,
           grace: float = 60.0) -> dict[str, int]:
    """Run the arms as niced subprocesses, `parallel` at a time; returns name -> exit code. With `deadline` (a
    time.time() value) nothing starts after it and what still runs `grace` seconds later is stopped (exit code
    -9); names never started get no code."""
    pending, running, codes = list(paths.items()), {}, {}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    while pending or running:
        late = deadline is not None and time.time() > deadline
        if late and pending:
            print(f"deadline: {len(pending)} runs not started", flush=True)
            pending = []
        while pending and len(running) < parallel:
            name, cfg = pending.pop(0)
            log = open(out / f"{name.replace('/', '__')}.log", "w")
            cmd = ["nice", "-n", "10", sys.executable, "-m", "training.finetune.experiment", "--one", str(cfg)]
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log, time.time())
        for name, (proc, log, t0) in list(running.items()):
            if proc.poll() is None and late and time.time() > deadline + grace:
                proc.kill()
                proc.wait()
            if proc.poll() is not None:
                log.close()
                codes[name] = proc.returncode
                print(f"{name}: exit {proc.returncode} after {time.time() - t0:.0f}s", flush=True)
                del running[name]
        time.sleep(1)
    return codes


def run_one(config: Path) -> None:
    """Train one arm (the subprocess entry point)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from training.finetune.config import load_config
    from training.finetune.trainer import train_from_config

    train_from_config(load_config(config))


def compare(out: Path, arms: list[str], img_dir: Path | None = None, max_step: int | None = None) -> dict[str, Any]:
    """results.json: per arm held-out before/after (paired bootstrap CI of the change), stability statistics and
    geometry; compare_curves.png, compare_heldout.png and the geometry plots."""
    from training.finetune.evaluate import bootstrap_ci
    from training.finetune.plots import read_metrics, summarize
    from training.geometry import analyze_run, plot_reports, write_report

    img_dir = img_dir or out
    results: dict[str, Any] = {}
    reports = []
    cache: dict = {}
    for arm in arms:
        mpath = out / arm / "metrics.jsonl"
        if not mpath.is_file():
            continue
        recs = read_metrics(mpath)
        evals = [r for r in recs if "eval_loss" in r]
        res = summarize(mpath)
        if len(evals) >= 2:
            before, after = evals[0]["per_chunk_loss"], evals[-1]["per_chunk_loss"]
            res["heldout_change"] = bootstrap_ci([a - b for a, b in zip(after, before, strict=False)])
        results[arm] = res
        if (out / arm / "checkpoints").is_dir():
            rep = analyze_run(out / arm, k=8, w0_cache=cache, max_step=max_step)
            reports.append(rep)
            res["geometry"] = rep["summary"]
            res["locking"] = rep["locking"]
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if reports:
        write_report(reports, out / "geometry")
        plot_reports(reports, img_dir)
    _plot_compare(out, [a for a in arms if a in results], img_dir)
    return results


def _plot_compare(out: Path, arms: list[str], img_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.finetune.plots import _smooth, read_metrics

    fig, ax = plt.subplots(1, 4, figsize=(18, 3.8))
    for arm in arms:
        recs = read_metrics(out / arm / "metrics.jsonl")
        train = [r for r in recs if r.get("kind", "").startswith("train")]
        st = [r["step"] for r in train]
        ax[0].plot(st, _smooth([r["rkl_full"] for r in train], 3), label=arm)
        ax[1].plot(st, [r["grad_norm"] for r in train], label=arm)
        ax[2].plot(st, _smooth([r["reward"] for r in train], 3), label=arm)
        ev = [r for r in recs if "eval_loss" in r]
        ax[3].plot([r["step"] for r in ev], [r["eval_loss"] for r in ev], "o-", label=arm)
    for a, t in zip(ax, ("reverse KL to teacher, visited positions (ma 3)", "gradient norm (pre-clip)",
                         "chrF of completions vs the file (ma 3)", "held-out next-token loss"), strict=False):
        a.set_title(t, fontsize=10)
        a.set_xlabel("step")
        a.legend(fontsize=7)
    fig.tight_layout()
    img_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(img_dir / "compare_curves.png", dpi=100)
    plt.close(fig)


def collect_adapters(runs: list[Path], arms: list[str], dest: Path) -> dict[str, Path]:
    """Per arm, one folder with each run's final adapter under the repository's folder name, the layout
    `code2lora eval --extra-arm ARM=DIR` reads; returns arm -> folder."""
    import shutil

    from training.eval.run import adapter_dirname

    out = {}
    for arm in arms:
        for run in runs:
            src = run / arm / "adapter"
            if not src.is_dir():
                continue
            repo = json.loads((run / arm / "config.json").read_text())["task"]["repo"]
            target = dest / arm / adapter_dirname(repo)
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(src, target)
            out[arm] = dest / arm
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI: run the comparison (or one arm with --one)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", type=Path, help="train a single arm config (internal)")
    ap.add_argument("--recipe", type=Path, default=Path(__file__).parent / "recipes" / "context_distill.json")
    ap.add_argument("--repo", help="repository folder or corpus name (overrides the recipe's task.repo)")
    ap.add_argument("--init-adapters", type=Path, default=None,
                    help="folder of `code2lora eval --export-adapters`: every arm starts from the repository's "
                         "generated adapter")
    ap.add_argument("--out", type=Path, default=Path("runs/compare"))
    ap.add_argument("--arms", default="sft_text,sft_teacher,opd,tropd,opd_rl")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--img-dir", type=Path, default=None)
    ap.add_argument("--analyze-only", action="store_true")
    ap.add_argument("--collect", type=Path, default=None,
                    help="also copy each arm's final adapter to COLLECT/<arm>/<repo> (for code2lora eval --extra-arm)")
    ap.add_argument("--max-step", type=int, default=None, help="geometry at this checkpoint step (equal budgets)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe key for every arm, e.g. --set temperature=0.6 --set task.n_prompts=256")
    args = ap.parse_args(argv)
    if args.one:
        run_one(args.one)
        return
    arms = args.arms.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.analyze_only:
        recipe = apply_sets(json.loads(args.recipe.read_text()), args.sets)
        init = None
        if args.init_adapters:
            from training.eval.run import adapter_dirname

            init = str(args.init_adapters / adapter_dirname(args.repo or recipe["task"]["repo"]))
            if not Path(init).is_dir():
                raise SystemExit(f"no generated adapter for {args.repo} under {args.init_adapters}")
        launch(arm_configs(recipe, arms, args.out, args.repo, init), args.parallel, args.out)
    res = compare(args.out, arms, args.img_dir, args.max_step)
    if args.collect:
        collect_adapters([args.out], arms, args.collect)
    print(json.dumps({a: {k: r.get(k) for k in ("start", "end", "heldout_change")} for a, r in res.items()}, indent=1))


if __name__ == "__main__":
    main()
