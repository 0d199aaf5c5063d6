"""Aggregate raw eval results into metrics with bootstrap intervals; write JSON, markdown and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from training.eval.metrics import (
    bootstrap_ci,
    delta_cosine_matrix,
    excludes_zero,
    mean_offdiag,
    param_cosine_matrix,
)
from training.eval.run import seq_metrics

ARM_ORDER = ("base", "shared_lora", "own", "average", "other", "per_repo_lora", "prompt")
ARM_LABEL = {
    "base": "base model",
    "shared_lora": "shared LoRA (same rank/modules)",
    "own": "generated, own repo",
    "average": "average generated adapter",
    "other": "another repo's generated adapter",
    "per_repo_lora": "per-repo LoRA trained directly",
    "prompt": "context in prompt (no adapter)",
}
METRICS = (("loss", "chunk", "next-token loss"), ("ident_loss", "chunk", "loss on repo-identifier tokens"),
           ("em", "line", "line EM"), ("es", "line", "line edit sim. (teacher-forced)"),
           ("em", "assert", "assertion EM"))


def rows(raw: dict[str, Any], tok: Any) -> dict[str, list[dict[str, Any]]]:
    """arm -> list of {repo, idx, kind, metrics...} (one per scored sequence)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for res in raw["results"]:
        for arm, seq_results in res["arms"].items():
            for idx, (seq, r) in enumerate(zip(res["seqs"], seq_results)):
                out.setdefault(arm, []).append({"repo": res["repo"], "idx": idx, "kind": seq.kind,
                                                **seq_metrics(tok, seq, r)})
        for idx, r in enumerate(res["prompt"]):
            seq = res["seqs"][idx]
            out.setdefault("prompt", []).append({"repo": res["repo"], "idx": idx, "kind": seq.kind,
                                                 **seq_metrics(tok, seq, r)})
    return out


def _values(rs: list[dict], metric: str, kind: str) -> tuple[list[float], list[str], list[tuple[str, int]]]:
    sel = [r for r in rs if r["kind"] == kind and r.get(metric) is not None]
    return [r[metric] for r in sel], [r["repo"] for r in sel], [(r["repo"], r["idx"]) for r in sel]


def arm_order(by_arm: dict[str, Any]) -> list[str]:
    """The standard arms in their fixed order, then any extra arms (`EvalOptions.extra_arms`) by name."""
    return [a for a in ARM_ORDER if a in by_arm] + sorted(a for a in by_arm if a not in ARM_ORDER)


def arm_table(by_arm: dict[str, list[dict]], n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """Per arm and metric: mean, 95% interval, n."""
    table: dict[str, dict[str, Any]] = {}
    for arm in arm_order(by_arm):
        if arm not in by_arm:
            continue
        table[arm] = {}
        for metric, kind, _label in METRICS:
            vals, _groups, _keys = _values(by_arm[arm], metric, kind)
            m, lo, hi = bootstrap_ci(vals, n=n_boot, seed=seed)
            table[arm][f"{kind}.{metric}"] = {"mean": m, "lo": lo, "hi": hi, "n": len(vals)}
    return table


def paired(by_arm: dict[str, list[dict]], a: str, b: str, metric: str, kind: str, n_boot: int, seed: int) -> dict:
    """mean(a - b) over sequences scored by both arms, with sequence-level and repository-cluster intervals."""
    if a not in by_arm or b not in by_arm:
        return {}
    va, _, ka = _values(by_arm[a], metric, kind)
    vb, _, kb = _values(by_arm[b], metric, kind)
    mb = dict(zip(kb, vb))
    pairs = [(x, mb[k], k[0]) for x, k in zip(va, ka) if k in mb]
    if not pairs:
        return {}
    diffs = [x - y for x, y, _ in pairs]
    groups = [g for _, _, g in pairs]
    seq_ci = bootstrap_ci(diffs, n=n_boot, seed=seed)
    repo_ci = bootstrap_ci(diffs, groups=groups, n=n_boot, seed=seed)
    return {"a": a, "b": b, "metric": f"{kind}.{metric}", "n": len(diffs), "repos": len(set(groups)),
            "mean_a": float(np.mean([x for x, _, _ in pairs])), "mean_b": float(np.mean([y for _, y, _ in pairs])),
            "diff": seq_ci[0], "seq_ci": [seq_ci[1], seq_ci[2]], "repo_ci": [repo_ci[1], repo_ci[2]],
            "excludes_zero_seq": excludes_zero(seq_ci), "excludes_zero_repo": excludes_zero(repo_ci),
            "wins": sum(d < 0 for d in diffs), "losses": sum(d > 0 for d in diffs)}


COMPARISONS = (
    ("own", "base", "loss", "chunk"), ("own", "base", "ident_loss", "chunk"),
    ("own", "average", "ident_loss", "chunk"), ("own", "other", "ident_loss", "chunk"),
    ("own", "average", "loss", "chunk"), ("own", "other", "loss", "chunk"),
    ("own", "shared_lora", "loss", "chunk"), ("own", "shared_lora", "ident_loss", "chunk"),
    ("average", "base", "loss", "chunk"),
    ("per_repo_lora", "own", "loss", "chunk"), ("per_repo_lora", "own", "ident_loss", "chunk"),
    ("prompt", "own", "loss", "chunk"), ("prompt", "own", "ident_loss", "chunk"),
    ("prompt", "base", "loss", "chunk"), ("prompt", "base", "ident_loss", "chunk"),
    ("own", "base", "em", "line"), ("own", "base", "es", "line"), ("own", "base", "em", "assert"),
)


def extra_comparisons(by_arm: dict[str, Any]) -> tuple[tuple[str, str, str, str], ...]:
    """Each extra arm against the generated adapter it started from, and against the base model."""
    return tuple((x, b, m, "chunk") for x in by_arm if x not in ARM_ORDER
                 for b in ("own", "base") for m in ("loss", "ident_loss"))


def build_report(raw: dict[str, Any], tok: Any, *, n_boot: int = 2000, seed: int = 0,
                 meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON report."""
    by_arm = rows(raw, tok)
    adapters = raw["adapters"]
    names = [r["repo"] for r in raw["results"]]
    dcos = delta_cosine_matrix(adapters) if len(adapters) > 1 else np.ones((1, 1))
    pcos = param_cosine_matrix(adapters) if len(adapters) > 1 else np.ones((1, 1))
    t = raw["timings"]
    report = {
        "meta": meta or {},
        "repos": names,
        "arms": arm_table(by_arm, n_boot, seed),
        "comparisons": [c for c in (paired(by_arm, a, b, m, k, n_boot, seed)
                                    for a, b, m, k in COMPARISONS + extra_comparisons(by_arm)) if c],
        "cosine": {"delta_w": dcos.tolist(), "params": pcos.tolist(),
                   "mean_offdiag_delta_w": mean_offdiag(dcos), "mean_offdiag_params": mean_offdiag(pcos)},
        "timings": {
            "generate_ms_mean": float(np.mean(t.get("encode_ms", [0])) + np.mean(t["hypernet_forward_ms"])),
            "encode_ms_mean": float(np.mean(t.get("encode_ms", [math.nan]))),
            "hypernet_forward_ms_mean": float(np.mean(t["hypernet_forward_ms"])),
            "per_repo_lora_s_mean": float(np.mean(t["per_repo_lora_s"])) if t["per_repo_lora_s"] else math.nan,
            "per_repo_lora_steps": t.get("per_repo_lora_steps"),
        },
        "prompt_tokens_mean": float(np.mean([r["prompt_tokens"] for r in raw["results"]])),
        "per_repo": per_repo(by_arm, names),
    }
    return report


def per_repo(by_arm: dict[str, list[dict]], names: list[str]) -> dict[str, dict[str, float]]:
    """Mean chunk loss and identifier loss per repository and arm."""
    out: dict[str, dict[str, float]] = {}
    for name in names:
        out[name] = {}
        for arm, rs in by_arm.items():
            for metric in ("loss", "ident_loss"):
                vals = [r[metric] for r in rs if r["repo"] == name and r["kind"] == "chunk" and r.get(metric) is not None]
                if vals and arm != "prompt":
                    out[name][f"{arm}.{metric}"] = float(np.mean(vals))
    return out


def _fmt(c: dict) -> str:
    if not c or c.get("n", 0) == 0 or c["mean"] != c["mean"]:
        return "–"
    return f"{c['mean']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]"


def markdown(report: dict[str, Any]) -> str:
    """Markdown tables of the report."""
    lines = ["| arm | " + " | ".join(label for _, _, label in METRICS) + " |",
             "|---|" + "---|" * len(METRICS)]
    for arm, cells in report["arms"].items():
        lines.append(f"| {ARM_LABEL.get(arm, arm)} | " + " | ".join(_fmt(cells.get(f"{k}.{m}", {})) for m, k, _ in METRICS) + " |")
    lines.append("")
    lines.append("Sequence counts (n) per metric: " + ", ".join(
        f"{k}.{m}={report['arms'].get('own', report['arms'].get('base', {})).get(f'{k}.{m}', {}).get('n', 0)}"
        for m, k, _ in METRICS) + ".")
    lines += ["", "| comparison (a − b) | metric | n seqs (repos) | mean a | mean b | diff | 95% CI (sequences) | "
              "95% CI (repos) | a better on |", "|---|---|---|---|---|---|---|---|---|"]
    for c in report["comparisons"]:
        lower_better = not c["metric"].endswith((".em", ".es"))
        wins = c["wins"] if lower_better else c["losses"]
        mark = " **✓**" if c["excludes_zero_seq"] and ((c["diff"] < 0) == lower_better) else ""
        lines.append(f"| {c['a']} − {c['b']} | {c['metric']} | {c['n']} ({c['repos']}) | {c['mean_a']:.3f} | "
                     f"{c['mean_b']:.3f} | {c['diff']:+.3f}{mark} | [{c['seq_ci'][0]:+.3f}, {c['seq_ci'][1]:+.3f}] | "
                     f"[{c['repo_ci'][0]:+.3f}, {c['repo_ci'][1]:+.3f}] | {wins}/{c['n']} |")
    cos = report["cosine"]
    t = report["timings"]
    lines += ["", f"Mean off-diagonal cosine between generated adapters: ΔW = BA {cos['mean_offdiag_delta_w']:.3f}, "
              f"raw (A, B) parameters {cos['mean_offdiag_params']:.3f}.", "",
              f"Generated adapter: {t['generate_ms_mean']:.0f} ms per repository (encode {t['encode_ms_mean']:.0f} ms + "
              f"hypernet forward {t['hypernet_forward_ms_mean']:.1f} ms). Per-repository LoRA: "
              f"{t['per_repo_lora_s_mean']:.1f} s each ({t['per_repo_lora_steps']} steps, including its forward passes). "
              f"Context in prompt: {report['prompt_tokens_mean']:.0f} extra prompt tokens per sequence."]
    return "\n".join(lines) + "\n"


def plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Bar chart of the loss metrics per arm (with intervals) and the adapter cosine heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    arms = list(report["arms"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, key, title in ((axes[0], "chunk.loss", "held-out next-token loss"),
                           (axes[1], "chunk.ident_loss", "loss on repo-defined identifier tokens")):
        means = [report["arms"][a][key]["mean"] for a in arms]
        err = [[m - report["arms"][a][key]["lo"] for a, m in zip(arms, means)],
               [report["arms"][a][key]["hi"] - m for a, m in zip(arms, means)]]
        ax.bar(range(len(arms)), means, yerr=err, capsize=4,
               color=["#999", "#c90", "#2a7", "#58c", "#c55", "#737", "#aa5"][: len(arms)])
        ax.set_xticks(range(len(arms)))
        ax.set_xticklabels(arms, rotation=30, ha="right")
        lo = min(report["arms"][a][key]["lo"] for a in arms)
        ax.set_ylim(max(0.0, lo - 0.3), None)
        ax.set_title(title + " (95% CI)")
    fig.tight_layout()
    p = out_dir / "eval_arms.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    m = np.array(report["cosine"]["delta_w"])
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(m, vmin=min(0.0, float(m.min())), vmax=1.0, cmap="viridis")
    names = [n.split("/", 1)[-1] for n in report["repos"]]
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_title("cosine of generated ΔW between repositories")
    fig.colorbar(im)
    fig.tight_layout()
    p = out_dir / "eval_cosine.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.json, report.md and the plots into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    (out_dir / "report.md").write_text(markdown(report))
    pngs = plots(report, out_dir)
    return {"json": out_dir / "report.json", "md": out_dir / "report.md", **{p.stem: p for p in pngs}}
