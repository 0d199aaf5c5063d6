"""Held-out metrics: the student's next-token loss on held-out chunks (all tokens and repo identifiers), the
teacher's loss with its context (what the context is worth), and the full-vocabulary reverse KL student->teacher
on the same positions (teacher-forced on real text, so it is deterministic)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from training.finetune.models import Student, Teacher
from training.finetune.rollout import completion_logits
from training.finetune.tasks import TaskData


def _ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)


def _same_length_batches(lengths: list[int], batch: int) -> Iterator[list[int]]:
    """Indices grouped by length (shortest first), `batch` at a time: stacked rows need no padding."""
    by_len: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_len.setdefault(n, []).append(i)
    for _n, rows in sorted(by_len.items()):
        for s in range(0, len(rows), batch):
            yield rows[s: s + batch]


@torch.no_grad()
def heldout_metrics(student: Student, teacher: Teacher | None, task: TaskData, pad_id: int, batch: int = 4,
                    with_teacher_loss: bool = True) -> dict[str, Any]:
    """{eval_loss, eval_ident_loss, eval_rkl, teacher_loss, teacher_ident_loss, per_chunk_loss} over
    `task.eval_chunks`."""
    chunks = task.eval_chunks
    per_chunk = [0.0] * len(chunks)
    tot = {"loss": 0.0, "n": 0, "ident": 0.0, "n_ident": 0, "rkl": 0.0, "teacher": 0.0, "teacher_ident": 0.0}
    for idx in _same_length_batches([len(c) for c in chunks], batch):
        ids = torch.tensor([chunks[i] for i in idx], dtype=torch.long)
        comp = ids[:, 1:]
        s_logits = completion_logits(student.active(), [[c[0]] for c in ids.tolist()], comp, pad_id)
        ce = _ce(s_logits, comp)
        for j, i in enumerate(idx):
            per_chunk[i] = float(ce[j].mean())
        tot["loss"] += float(ce.sum())
        tot["n"] += ce.numel()
        ident = None
        if task.eval_ident:
            ident = torch.tensor([task.eval_ident[i][1:] for i in idx], dtype=torch.bool)
            tot["ident"] += float(ce[ident].sum())
            tot["n_ident"] += int(ident.sum())
        if teacher is not None:
            t_logits = completion_logits(teacher.active(), [[c[0]] for c in ids.tolist()], comp, pad_id,
                                         cache=teacher.context_cache())
            ls, lt = F.log_softmax(s_logits, -1), F.log_softmax(t_logits, -1)
            tot["rkl"] += float((ls.exp() * (ls - lt)).sum(-1).sum())
            if with_teacher_loss:
                t_ce = _ce(t_logits, comp)
                tot["teacher"] += float(t_ce.sum())
                if ident is not None:
                    tot["teacher_ident"] += float(t_ce[ident].sum())
    n = max(tot["n"], 1)
    out: dict[str, Any] = {"eval_loss": tot["loss"] / n, "per_chunk_loss": per_chunk}
    if tot["n_ident"]:
        out["eval_ident_loss"] = tot["ident"] / tot["n_ident"]
    if teacher is not None:
        out["eval_rkl"] = tot["rkl"] / n
        if with_teacher_loss:
            out["teacher_loss"] = tot["teacher"] / n
            if tot["n_ident"]:
                out["teacher_ident_loss"] = tot["teacher_ident"] / tot["n_ident"]
    return out


@torch.no_grad()
def prompt_text_metrics(student: Student, teacher: Teacher | None, task: TaskData, pad_id: int, limit: int = 64,
                        batch: int = 16, with_teacher_loss: bool = True) -> dict[str, float]:
    """{train_text_loss, teacher_train_text_loss}: next-token loss on the *true* continuations of the first
    `limit` training prompts. On-policy methods never see this text; it tells whether what they learn on their own
    samples carries over to real text of the files they train on (before asking about held-out files)."""
    prompts = [p for p in task.prompts[:limit] if p.reference]
    tot = {"s": 0.0, "t": 0.0, "n": 0}
    for idx in _same_length_batches([len(p.reference) for p in prompts], batch):
        ps = [prompts[i] for i in idx]
        comp = torch.tensor([p.reference for p in ps], dtype=torch.long)
        tot["s"] += float(_ce(completion_logits(student.active(), [p.ids for p in ps], comp, pad_id), comp).sum())
        if teacher is not None and with_teacher_loss:
            t_logits = completion_logits(teacher.active(), [p.ids for p in ps], comp, pad_id,
                                         cache=teacher.context_cache())
            tot["t"] += float(_ce(t_logits, comp).sum())
        tot["n"] += comp.numel()
    if not tot["n"]:
        return {}
    out = {"train_text_loss": tot["s"] / tot["n"]}
    if teacher is not None and with_teacher_loss:
        out["teacher_train_text_loss"] = tot["t"] / tot["n"]
    return out


def bootstrap_ci(values: list[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5th, 97.5th percentile) of the mean by bootstrap over the values."""
    if not values:
        return float("nan"), float("nan"), float("nan")
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(values) for _ in values) / len(values) for _ in range(n_boot))
    return sum(values) / len(values), means[int(0.025 * n_boot)], means[int(0.975 * n_boot) - 1]
