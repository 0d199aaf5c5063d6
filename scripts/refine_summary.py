"""Summarise `code2lora refine --json` results: one markdown row per repository, then refined − generated with a
95% bootstrap interval over repositories (what docs/EVAL.md shows).

    python scripts/refine_summary.py runs/refine-test/*.json
    python scripts/refine_summary.py runs/grid/VARIANT/*.json   # scripts/refine_grid.py's files
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from training.eval.metrics import bootstrap_ci

KEYS = ("loss", "ident_loss", "ident_em", "invented_rate")
# written by scripts/refine_grid.py: identifier loss on names the context files define / only held-out files define
# (a repository whose scored windows hold none of one kind has no value for it), and the service budget's scores
EXTRA_KEYS = ("ident_loss_seen", "ident_loss_unseen", "loss_service", "ident_loss_service", "ident_em_service",
              "invented_rate_service")


def main(paths: list[str]) -> None:
    """Print the table and the intervals for the given result files."""
    runs = [json.loads(Path(p).read_text()) for p in sorted(paths)]
    print("| repository | generated: loss / ident loss / ident EM / invented "
          "| refined: loss / ident loss / ident EM / invented | steps | refine s | total s |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        name = Path(r["repo"]).name.replace("+", "/", 1)
        gen = " / ".join(f"{r['generated'][k]:.3f}" for k in KEYS)
        ref = " / ".join(f"{r['refined'][k]:.3f}" for k in KEYS)
        how = r["refine"]["stopped"]
        steps = f"{r['refine']['steps']}" + ("" if how == "steps" else f" ({how})")
        print(f"| {name} | {gen} | {ref} | {steps} | {r['refine']['seconds']:.0f} | {r['wall_s']['total']:.0f} |")
    print()
    for k in KEYS + EXTRA_KEYS:
        xs = [r["refined_minus_generated"].get(k) for r in runs]
        xs = [x for x in xs if x is not None]
        if not xs:
            continue  # a key only `scripts/refine_grid.py` writes
        m, lo, hi = bootstrap_ci(xs)
        print(f"- refined − generated {k}: {m:+.3f} [{lo:+.3f}, {hi:+.3f}] over {len(xs)} repositories")
    for k in ("ident_em", "invented_rate"):
        for arm in ("base", "generated", "refined"):
            print(f"- {arm} {k} {sum(r[arm][k] for r in runs) / len(runs):.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
