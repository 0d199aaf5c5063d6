"""Many repositories at once: the comparison arms of `experiment` on every repository of the corpus's val and/or
test split (and several seeds), as one pool of subprocesses with a deadline, then one table per split: each arm's
held-out change against the starting adapter, per repository and pooled, with bootstrap intervals.

Selection is meant to run on the val split and the claim on the test split: pick an arm from the val table, then
read its test row.

    python -m training.finetune.sweep --recipe training/finetune/recipes/context_distill_self.json \\
        --init-adapters runs/generated --splits val,test --arms tropd,opd,sft_text --out runs/sweep \\
        --parallel 16 --deadline-s 420 --set device=cuda --set steps=96
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from training.finetune.experiment import apply_sets, arm_configs, launch

RESULTS = "sweep_results.json"
STABILITY = ("grad_norm", "rkl", "rkl_full", "loss")  # summary.json series averaged per arm


def split_repos(train_config: str, splits: list[str]) -> dict[str, list[str]]:
    """Corpus repository names by split ("val", "test", ...) for the hypernet training config's (cached) corpus."""
    from hypernet.basemodel import load_tokenizer
    from training.data.corpus import build_corpus
    from training.hypernet.config import load_config

    tcfg = load_config(train_config)
    corpus = build_corpus(tcfg.corpus, load_tokenizer(tcfg.base_model), cache_dir=tcfg.work_path, progress=False)
    return {s: [r.name for r in corpus if r.split == s] for s in splits}


def plan(recipe: dict[str, Any], arms: list[str], repos: dict[str, list[str]], seeds: list[int], out: Path,
         init_adapters: Path) -> dict[str, Path]:
    """Config per run, named "<split>/<repo>/s<seed>/<arm>", ordered arm-major (the first arms finish on every
    repository before later arms start), then seed, then split and repository in the given order."""
    from training.eval.run import adapter_dirname

    by_key: dict[tuple[str, int, str, str], Path] = {}
    for split, names in repos.items():
        for repo in names:
            init = init_adapters / adapter_dirname(repo)
            if not init.is_dir():
                raise SystemExit(f"no starting adapter for {repo} under {init_adapters}")
            for seed in seeds:
                seeded = apply_sets(recipe, [f"seed={seed}", f"task.seed={seed}"])
                run_dir = out / split / adapter_dirname(repo) / f"s{seed}"
                for arm, cfg in arm_configs(seeded, arms, run_dir, repo, str(init)).items():
                    by_key[(arm, seed, split, repo)] = cfg
    splits = list(repos)
    order = sorted(by_key, key=lambda k: (arms.index(k[0]), k[1], splits.index(k[2]), repos[k[2]].index(k[3])))
    return {f"{split}/{repo}/s{seed}/{arm}": by_key[(arm, seed, split, repo)] for arm, seed, split, repo in order}


def _run_change(metrics: Path) -> dict[str, Any] | None:
    """One run's held-out change against its step-0 evaluation: per chunk, identifiers, training text, by step, and
    its stability statistics (None unless it reached its last step's evaluation)."""
    from training.finetune.plots import read_metrics

    if not metrics.is_file():
        return None
    recs = read_metrics(metrics)
    cfg = json.loads((metrics.parent / "config.json").read_text())
    evals = [r for r in recs if "per_chunk_loss" in r]
    if len(evals) < 2 or evals[-1]["step"] != cfg["steps"]:
        return None
    first, last = evals[0], evals[-1]
    out: dict[str, Any] = {"per_chunk": [b - a for a, b in zip(first["per_chunk_loss"], last["per_chunk_loss"], strict=False)]}
    if "eval_ident_loss" in first and "eval_ident_loss" in last:
        out["ident_change"] = last["eval_ident_loss"] - first["eval_ident_loss"]
    if "train_text_loss" in first and "train_text_loss" in last:
        out["train_text_change"] = last["train_text_loss"] - first["train_text_loss"]
    out["curve"] = [(r["step"], r["eval_loss"] - first["eval_loss"],
                     r.get("eval_ident_loss", 0.0) - first.get("eval_ident_loss", 0.0)) for r in evals]
    summary = metrics.parent / "summary.json"
    if summary.is_file():
        sm = json.loads(summary.read_text())
        out["stability"] = {f"{key}_{stat}": sm[key][stat] for key in STABILITY
                            for stat in ("mean", "max", "spikes", "step_diff_std") if key in sm and stat in sm[key]}
    return out


def aggregate(out: Path) -> dict[str, Any]:
    """{split: {arm: {...}}}: per repository the mean change (seeds averaged), and over repositories the mean
    change with a bootstrap interval over repositories and one over all chunks, the share of repositories that
    improved, the mean identifier / training-text change, the mean change at every evaluated step, and the runs'
    stability statistics (summary.json) averaged. Writes sweep_results.json."""
    from training.finetune.evaluate import bootstrap_ci

    runs: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    for metrics in sorted(out.glob("*/*/s*/*/metrics.jsonl")):  # <split>/<repo>/s<seed>/<arm>/metrics.jsonl
        arm, repo, split = metrics.parent.name, metrics.parents[2].name, metrics.parents[3].name
        res = _run_change(metrics)
        if res is not None:
            runs.setdefault(split, {}).setdefault(arm, {}).setdefault(repo, []).append(res)

    table: dict[str, Any] = {}
    for split, arms in runs.items():
        for arm, repos in arms.items():
            per_repo = {r: sum(sum(x["per_chunk"]) / len(x["per_chunk"]) for x in xs) / len(xs) for r, xs in repos.items()}
            chunks = [c for xs in repos.values() for x in xs for c in x["per_chunk"]]
            ident = [x["ident_change"] for xs in repos.values() for x in xs if "ident_change" in x]
            text = [x["train_text_change"] for xs in repos.values() for x in xs if "train_text_change" in x]
            stab = [x["stability"] for xs in repos.values() for x in xs if "stability" in x]
            curve: dict[int, list[tuple[float, float]]] = {}
            for xs in repos.values():
                for x in xs:
                    for step, d_all, d_ident in x["curve"]:
                        curve.setdefault(step, []).append((d_all, d_ident))
            table.setdefault(split, {})[arm] = {
                "repos": len(per_repo), "runs": sum(len(xs) for xs in repos.values()),
                "change": list(bootstrap_ci(list(per_repo.values()))), "change_chunks": list(bootstrap_ci(chunks)),
                "improved": sum(v < 0 for v in per_repo.values()),
                "ident_change": sum(ident) / len(ident) if ident else None,
                "train_text_change": sum(text) / len(text) if text else None,
                # per evaluated step: mean change (all tokens, identifiers) over the runs that logged it
                "curve": [[st, sum(v[0] for v in vs) / len(vs), sum(v[1] for v in vs) / len(vs), len(vs)]
                          for st, vs in sorted(curve.items())],
                "stability": {k: sum(d[k] for d in stab if k in d) / sum(k in d for d in stab)
                              for k in sorted({k for d in stab for k in d})},
                "per_repo": per_repo}
    (out / RESULTS).write_text(json.dumps(table, indent=1) + "\n")
    return table


def markdown(table: dict[str, Any]) -> str:
    """One table per split, arms sorted by mean change."""
    lines = []
    for split, arms in table.items():
        lines += [f"**{split}**", "",
                  "| arm | repos (runs) | held-out change, mean over repos [95% CI repos] | [95% CI chunks] | "
                  "repos improved | identifier change | training-text change |", "|---|---|---|---|---|---|---|"]
        for arm, r in sorted(arms.items(), key=lambda kv: kv[1]["change"][0]):
            m, lo, hi = r["change"]
            _, clo, chi = r["change_chunks"]
            ident = "–" if r["ident_change"] is None else f"{r['ident_change']:+.3f}"
            text = "–" if r["train_text_change"] is None else f"{r['train_text_change']:+.3f}"
            lines.append(f"| {arm} | {r['repos']} ({r['runs']}) | {m:+.3f} [{lo:+.3f}, {hi:+.3f}] | "
                         f"[{clo:+.3f}, {chi:+.3f}] | {r['improved']}/{r['repos']} | {ident} | {text} |")
        lines.append("")
        lines += ["| arm | grad norm mean | grad norm max | grad-norm spikes | rKL (own samples) spikes | "
                  "rKL (full, visited) spikes | rKL (full) step-to-step std | loss spikes |",
                  "|---|---|---|---|---|---|---|---|"]
        for arm, r in sorted(arms.items()):
            st = r.get("stability") or {}
            cells = [st.get(k) for k in ("grad_norm_mean", "grad_norm_max", "grad_norm_spikes", "rkl_spikes",
                                         "rkl_full_spikes", "rkl_full_step_diff_std", "loss_spikes")]
            lines.append(f"| {arm} | " + " | ".join("–" if c is None else f"{c:.2f}" for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(table: dict[str, Any], path: Path) -> None:
    """Per split: each arm's held-out change per repository (dots) and its mean with the repository interval; below,
    the mean change by training step (all tokens solid, identifier tokens dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_arms = sorted({a for arms in table.values() for a in arms})
    color = {a: f"C{i % 10}" for i, a in enumerate(all_arms)}  # one colour per arm in every panel
    fig, axes = plt.subplots(2, len(table), figsize=(6.5 * len(table), 8), squeeze=False)
    for ax, (split, arms) in zip(axes[1], table.items(), strict=False):
        for arm in sorted(arms):
            c = arms[arm]["curve"]
            ax.plot([p[0] for p in c], [p[1] for p in c], "o-", color=color[arm], label=f"{arm}: all tokens")
            ax.plot([p[0] for p in c], [p[2] for p in c], "o--", color=color[arm], label=f"{arm}: identifiers")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel("mean held-out change (nats / token)")
        ax.set_title(f"{split}: change against the starting adapter, by step", fontsize=10)
        ax.legend(fontsize=7)
    for ax, (split, arms) in zip(axes[0], table.items(), strict=False):
        names = sorted(arms, key=lambda a: arms[a]["change"][0])
        for i, arm in enumerate(names):
            r = arms[arm]
            vals = list(r["per_repo"].values())
            ax.scatter([i] * len(vals), vals, s=12, alpha=0.6, color=color[arm])
            m, lo, hi = r["change"]
            ax.errorbar([i + 0.15], [m], yerr=[[m - lo], [hi - m]], fmt="k_", capsize=4)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{split}: held-out loss change vs the starting adapter", fontsize=10)
        ax.set_ylabel("nats / token (negative = better)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """CLI: plan, launch with a deadline, aggregate."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", type=Path, default=Path(__file__).parent / "recipes" / "context_distill_self.json")
    ap.add_argument("--init-adapters", type=Path, default=Path("runs/generated"),
                    help="folder of `code2lora eval --export-adapters` for these repositories")
    ap.add_argument("--splits", default="val,test", help="corpus splits whose repositories are run")
    ap.add_argument("--arms", default="tropd,opd,sft_text", help="arms of training.finetune.experiment, by priority")
    ap.add_argument("--max-repos", type=int, default=None, help="at most this many repositories per split")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--out", type=Path, default=Path("runs/sweep"))
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--deadline-s", type=float, default=None, help="start nothing after this many seconds")
    ap.add_argument("--grace-s", type=float, default=60.0, help="then stop what still runs after this many more")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--analyze-only", action="store_true")
    ap.add_argument("--plot", type=Path, default=None, help="write the per-repository plot here")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.analyze_only:
        t0 = time.time()
        recipe = apply_sets(json.loads(args.recipe.read_text()), args.sets)
        repos = split_repos(recipe["task"]["train_config"], args.splits.split(","))
        repos = {s: names[: args.max_repos] for s, names in repos.items()}
        runs = plan(recipe, args.arms.split(","), repos, [int(s) for s in args.seeds.split(",")], args.out,
                    args.init_adapters)
        print(f"{len(runs)} runs over {sum(map(len, repos.values()))} repositories", flush=True)
        deadline = t0 + args.deadline_s if args.deadline_s else None
        codes = launch(runs, args.parallel, args.out, deadline, args.grace_s)
        (args.out / "exit_codes.json").write_text(json.dumps(codes, indent=1) + "\n")
    table = aggregate(args.out)
    if args.plot and table:
        plot(table, args.plot)
    print(markdown(table))


if __name__ == "__main__":
    main()
