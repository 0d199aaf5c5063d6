"""Plot training curves from the JSONL log."""

from __future__ import annotations

import json
from pathlib import Path


def read_log(path: Path) -> list[dict]:
    """Records of a JSONL log."""
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def _smooth(xs: list[float], k: int = 10) -> list[float]:
    out, acc = [], []
    for x in xs:
        acc.append(x)
        acc = acc[-k:]
        out.append(sum(acc) / len(acc))
    return out


def plot_curves(log_path: Path, out_png: Path, title: str = "") -> Path:
    """Train loss / identifier CE (smoothed) and validation own / base / other-adapter losses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in read_log(log_path) if r.get("kind") == "train"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in recs]
    for key, label in (("loss", "weighted loss"), ("ce", "CE other tokens"), ("ident_ce", "CE repo identifiers")):
        vals = [r.get(key, float("nan")) for r in recs]
        axes[0].plot(steps, _smooth(vals), label=label)
    axes[0].set_xlabel("step")
    axes[0].set_title("training (moving average of 10)")
    axes[0].legend()
    val = [r for r in recs if "val_own" in r]
    if val:
        vs = [r["step"] for r in val]
        for key, label, style in (("val_base", "base, all", "k--"), ("val_own", "own adapter, all", "b-"),
                                  ("val_base_ident", "base, identifiers", "k:"),
                                  ("val_own_ident", "own adapter, identifiers", "g-"),
                                  ("val_other_ident", "other repo's adapter, identifiers", "r-")):
            axes[1].plot(vs, [r[key] for r in val], style, marker="o", label=label)
        axes[1].set_xlabel("step")
        axes[1].set_title("validation repositories (held-out files)")
        axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
