"""How much better than the starting student is each candidate teacher, on the held-out chunks the fine-tuned
adapter is judged on? Context distillation can at most close that gap, so pick the teacher before training.

    python -m training.finetune.teacher_gap --recipe training/finetune/recipes/context_distill_self.json \
        --repo pypi/requests --init-adapters runs/generated --budgets 0,384,1024

Teachers: the base model, and the starting student itself (`teacher.student_adapter`), each with the first
`budget` tokens of the repository's rendered API in the prompt. Losses are split into tokens of identifiers the
repository defines and all other tokens.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from training.finetune.config import config_from_dict
from training.finetune.evaluate import heldout_metrics
from training.finetune.models import Teacher
from training.finetune.tasks import context_ids
from training.finetune.trainer import build_run


def _other(loss: float, ident: float, n: int, n_ident: int) -> float:
    return (loss * n - ident * n_ident) / max(n - n_ident, 1)


def _pair(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None else f"{a:.3f} -> {b:.3f}"


def teacher_gap(recipe: dict[str, Any], budgets: list[int]) -> list[dict[str, Any]]:
    """One row per (teacher, budget): held-out loss of teacher and student, all / identifier / other tokens."""
    recipe = {**recipe, "teacher": {**recipe.get("teacher", {}), "student_adapter": False, "adapter": None}}
    cfg = config_from_dict(recipe)
    student, _teacher, task, tok = build_run(cfg)
    n = sum(len(c) - 1 for c in task.eval_chunks)
    n_ident = sum(sum(m[1:]) for m in task.eval_ident)  # eval_ident is empty for a 'texts' task
    rows = []
    for budget in budgets:
        ctx = context_ids(tok, task.context_text, budget) if budget else []
        candidates = {"base": Teacher(student.model, ctx)}
        if cfg.student.init_adapter:
            candidates["starting student"] = Teacher.with_adapter(student.model, cfg.student.init_adapter, ctx)
        for name, teacher in candidates.items():
            m = heldout_metrics(student, teacher, task, tok.eos_token_id)
            rows.append({
                "teacher": name, "context_tokens": len(ctx), "teacher_loss": m["teacher_loss"],
                "student_loss": m["eval_loss"], "gap": m["eval_loss"] - m["teacher_loss"],
                "teacher_ident": m.get("teacher_ident_loss"), "student_ident": m.get("eval_ident_loss"),
                "teacher_other": _other(m["teacher_loss"], m.get("teacher_ident_loss") or 0.0, n, n_ident),
                "student_other": _other(m["eval_loss"], m.get("eval_ident_loss") or 0.0, n, n_ident),
                "rkl": m["eval_rkl"], "tokens": n, "ident_tokens": n_ident})
    return rows


def main(argv: list[str] | None = None) -> None:
    """CLI: print (and optionally write) the teacher-gap table of one repository."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", type=Path, required=True)
    ap.add_argument("--repo", required=True, help="corpus repository name (or folder, for a 'repo' task)")
    ap.add_argument("--init-adapters", type=Path, default=None, help="folder of `code2lora eval --export-adapters`")
    ap.add_argument("--budgets", default="0,384,1024", help="context token budgets, comma-separated")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    recipe = json.loads(args.recipe.read_text())
    recipe["task"] = {**recipe.get("task", {}), "repo": args.repo}
    recipe["progress"] = False
    if args.init_adapters:
        from training.eval.run import adapter_dirname

        recipe["student"] = {**recipe.get("student", {}),
                             "init_adapter": str(args.init_adapters / adapter_dirname(args.repo))}
    rows = teacher_gap(recipe, [int(b) for b in args.budgets.split(",")])
    print(f"{args.repo}: {rows[0]['tokens']} held-out tokens, {rows[0]['ident_tokens']} of them identifiers")
    print("| teacher | context tokens | teacher loss | student − teacher | identifiers (student -> teacher) "
          "| other tokens (student -> teacher) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['teacher']} | {r['context_tokens']} | {r['teacher_loss']:.3f} | {r['gap']:+.3f} "
              f"| {_pair(r['student_ident'], r['teacher_ident'])} | {_pair(r['student_other'], r['teacher_other'])} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
