"""Run summaries (held-out before/after, gradient-norm statistics, loss spikes) and training-curve plots."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl file."""
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def spikes(values: list[float], z: float = 3.0) -> int:
    """Steps whose value exceeds the run's median by more than z robust standard deviations (1.4826 MAD)."""
    vals = [v for v in values if v == v]
    if len(vals) < 3:
        return 0
    med = statistics.median(vals)
    mad = statistics.median(abs(v - med) for v in vals) * 1.4826
    return sum(v > med + z * max(mad, 1e-12) for v in vals)


def series_stats(values: list[float]) -> dict[str, float]:
    """mean, std, max, p95 and spike count of a series."""
    vals = sorted(v for v in values if v == v)
    if not vals:
        return {}
    return {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals), "max": vals[-1],
            "p95": vals[min(len(vals) - 1, int(0.95 * len(vals)))], "spikes": spikes(values)}


def summarize(path: Path) -> dict[str, Any]:
    """First and last held-out metrics, and stability statistics of the training curves."""
    recs = read_metrics(path)
    evals = [r for r in recs if "eval_loss" in r]
    train = [r for r in recs if r.get("kind", "").startswith("train")]
    out: dict[str, Any] = {"steps": train[-1]["step"] if train else 0}
    if evals:
        keys = ("eval_loss", "eval_ident_loss", "eval_rkl", "teacher_loss", "teacher_ident_loss", "train_text_loss",
                "teacher_train_text_loss")
        out["start"] = {k: evals[0][k] for k in keys if k in evals[0]}
        out["end"] = {k: evals[-1][k] for k in keys if k in evals[-1]}
    out["grad_norm"] = series_stats([r["grad_norm"] for r in train])
    out["loss"] = series_stats([r["loss"] for r in train])
    diffs = [b["loss"] - a["loss"] for a, b in zip(train, train[1:], strict=False)]
    out["loss"]["step_diff_std"] = statistics.pstdev(diffs) if len(diffs) > 1 else 0.0
    out["rkl"] = series_stats([r["rkl"] for r in train])
    # Every method logs the full-vocabulary reverse KL at the visited positions: the one curve on which OPD and
    # TrOPD (whose loss adds clipping, a KL and a guidance term) can be compared for stability.
    rkl_full = [r["rkl_full"] for r in train if "rkl_full" in r]
    if rkl_full:
        out["rkl_full"] = series_stats(rkl_full)
        rdiffs = [b - a for a, b in zip(rkl_full, rkl_full[1:], strict=False)]
        out["rkl_full"]["step_diff_std"] = statistics.pstdev(rdiffs) if len(rdiffs) > 1 else 0.0
    out["reward"] = series_stats([r["reward"] for r in train])
    out["sec_per_step"] = statistics.fmean(r["sec"] for r in train) if train else 0.0
    return out


def _smooth(xs: list[float], k: int = 5) -> list[float]:
    out, acc = [], []
    for x in xs:
        acc = (acc + [x])[-k:]
        good = [a for a in acc if a == a]
        out.append(sum(good) / len(good) if good else float("nan"))
    return out


def plot_run(path: Path, out_png: Path, title: str = "") -> Path:
    """Four panels: loss, reverse KL (sampled and full-vocab), gradient norm, held-out loss and reverse KL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_metrics(path)
    train = [r for r in recs if r.get("kind", "").startswith("train")]
    evals = [r for r in recs if "eval_loss" in r]
    steps = [r["step"] for r in train]
    fig, ax = plt.subplots(1, 4, figsize=(17, 3.6))
    ax[0].plot(steps, [r["loss"] for r in train], alpha=0.4, label="loss")
    ax[0].plot(steps, _smooth([r["loss"] for r in train]), label="loss (ma 5)")
    ax[0].set_title("training loss")
    for key in ("rkl", "rkl_full"):
        ax[1].plot(steps, _smooth([r.get(key, float("nan")) for r in train]), label=key)
    ax[1].set_title("reverse KL to teacher (ma 5)")
    ax[2].plot(steps, [r["grad_norm"] for r in train], label="grad norm (pre-clip)")
    ax[2].set_title("gradient norm")
    if evals:
        es = [r["step"] for r in evals]
        ax[3].plot(es, [r["eval_loss"] for r in evals], "o-", label="held-out loss")
        if "eval_ident_loss" in evals[0]:
            ax[3].plot(es, [r["eval_ident_loss"] for r in evals], "s-", label="held-out identifier loss")
        if "eval_rkl" in evals[0]:
            ax[3].plot(es, [r["eval_rkl"] for r in evals], "^-", label="held-out reverse KL")
        ax[3].set_title("held-out")
    for a in ax:
        a.set_xlabel("step")
        a.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
