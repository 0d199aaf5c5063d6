"""What a user sees, as numbers: identifier completion, invented names, generated lines, and the losses; for one
adapter (`score_adapter`) or several on the same cuts (`score_arms`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from hypernet.metrics.cuts import Cut, LineCase, repo_cuts, repo_line_cases, text_chunks
from hypernet.metrics.generate import Tensors, chunk_losses, complete, summarise_losses
from hypernet.metrics.text import (
    edit_similarity,
    exact_match,
    first_identifier,
    known_identifiers,
    repo_identifiers,
    stable_hash,
    words,
)

if TYPE_CHECKING:
    from torch import nn

    from hypernet.context import RepoContext

_LEAD_IDENT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)")
_IDENT_TAIL = re.compile(r"[A-Za-z0-9_]*")


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def predicted_identifier(cut: Cut, completion: str) -> str | None:
    """The identifier the completion puts at the cut: for "boundary" cuts the identifier it starts with (leading
    whitespace allowed), for "inside" cuts the partial identifier continued by the completion's word characters."""
    if cut.mode == "inside":
        tail = _IDENT_TAIL.match(completion)
        return cut.partial + (tail.group() if tail else "")
    m = _LEAD_IDENT.match(completion)
    return m.group(1) if m else None


def identifier_metrics(cuts: Sequence[Cut], completions: Sequence[str], known: set[str] | frozenset[str]
                       ) -> dict[str, Any]:
    """Identifier exact match (CrossCodeEval-style: the identifier the completion puts at the cut equals the
    target; for "inside" cuts the completion continues the partial identifier) and the invented-identifier rate
    (share of cuts whose first produced identifier exists neither in `known` nor in the cut's prompt), with the
    split by `Cut.in_prompt` and one record per cut. Means are None when there is nothing to average.
    """
    if len(cuts) != len(completions):
        raise ValueError("one completion per cut")
    recs: list[dict[str, Any]] = []
    for cut, comp in zip(cuts, completions, strict=False):
        pred = predicted_identifier(cut, comp)
        produced = pred if pred else first_identifier(comp)
        invented = produced is not None and produced not in known and produced not in words(cut.prefix_text)
        recs.append({"path": cut.path, "line": cut.line, "mode": cut.mode, "target": cut.target,
                     "partial": cut.partial, "in_prompt": cut.in_prompt, "predicted": pred, "produced": produced,
                     "completion": comp, "em": float(pred == cut.target), "invented": float(invented)})
    seen = [r["em"] for r in recs if r["in_prompt"]]
    unseen = [r["em"] for r in recs if not r["in_prompt"]]
    return {"n": len(recs), "ident_em": _mean([r["em"] for r in recs]),
            "invented_rate": _mean([r["invented"] for r in recs]), "n_in_prompt": len(seen),
            "in_prompt_share": len(seen) / len(recs) if recs else None,
            "ident_em_in_prompt": _mean(seen), "ident_em_not_in_prompt": _mean(unseen), "records": recs}


def rest_of_line(completion: str) -> str:
    """The generated line: the completion without leading blank space, up to the first line break."""
    return completion.lstrip().split("\n", 1)[0]


def line_metrics(cases: Sequence[LineCase], completions: Sequence[str]) -> dict[str, Any]:
    """Generated (not teacher-forced) next-line exact match (whitespace-insensitive) and edit similarity of
    `rest_of_line(completion)` against each case's target, with one record per case."""
    if len(cases) != len(completions):
        raise ValueError("one completion per case")
    recs: list[dict[str, Any]] = []
    for case, comp in zip(cases, completions, strict=False):
        line = rest_of_line(comp)
        recs.append({"path": case.path, "line": case.line, "target": case.target, "generated": line,
                     "em": exact_match(line, case.target), "edit_sim": edit_similarity(line, case.target)})
    return {"n": len(recs), "line_em": _mean([r["em"] for r in recs]),
            "line_edit_sim": _mean([r["edit_sim"] for r in recs]), "records": recs}


@dataclass(frozen=True)
class MetricBudget:
    """How much of a repository's held-out files one scoring reads (every choice seeded and stable).

    The default reads about 1,300 prompt tokens per adapter and generates at most 8 + 16 tokens per prompt:
    a few seconds per adapter on an idle 2-core CPU with the bundled 135M model (`score_arms` scales with the
    number of arms).
    """

    chunks: int = 4  # loss windows
    seq_len: int = 128
    cuts: int = 8  # identifier cut points
    cut_prefix_tokens: int = 128
    ident_new_tokens: int = 8  # an identifier is judged whole only when the completion goes past its end
    lines: int = 4  # next-line cases
    line_prefix_tokens: int = 64
    line_new_tokens: int = 16  # also the longest target line, in tokens
    mode: str = "boundary"
    max_files: int = 64
    batch_size: int = 16
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (stored beside the numbers it produced)."""
        return asdict(self)


def _pick_files(heldout: Mapping[str, str], budget: MetricBudget) -> dict[str, str]:
    paths = sorted(heldout, key=lambda p: stable_hash(budget.seed, "file", p))[: budget.max_files]
    return {p: heldout[p] for p in sorted(paths)}


def score_arms(model: nn.Module, tokenizer: Any, heldout: Mapping[str, str], ctx: RepoContext,
               arms: Mapping[str, tuple[Tensors | None, float]], *, budget: MetricBudget = MetricBudget(),
               records: bool = False) -> dict[str, dict[str, Any]]:
    """`score_adapter` for several adapters ({arm: (adapter or None, scaling)}) on the same chunks, cuts and lines,
    every arm's rows in the same batches (one adapter per row). Returns {arm: flat metrics}; with `records`,
    each arm's dict also holds "cut_records" and "line_records" (per cut / per line, not flat).
    """
    files = _pick_files(heldout, budget)
    idents = frozenset(repo_identifiers(ctx))
    known = known_identifiers(ctx)
    names = list(arms)
    chunks = text_chunks(files, tokenizer, idents, n=budget.chunks, seq_len=budget.seq_len, seed=budget.seed)
    cuts = repo_cuts(files, tokenizer, idents, n=budget.cuts, seed=budget.seed,
                     max_prefix_tokens=budget.cut_prefix_tokens, mode=budget.mode)
    lines = repo_line_cases(files, tokenizer, n=budget.lines, seed=budget.seed,
                            max_prefix_tokens=budget.line_prefix_tokens, max_target_tokens=budget.line_new_tokens)

    def per_row(k: int) -> tuple[list[Tensors | None], list[float]]:
        return ([arms[a][0] for a in names for _ in range(k)], [float(arms[a][1]) for a in names for _ in range(k)])

    ad, sc = per_row(len(chunks))
    loss_rows = chunk_losses(model, chunks * len(names), adapter=ad, scaling=sc, batch_size=budget.batch_size)
    ad, sc = per_row(len(cuts))
    cut_out = complete(model, tokenizer, [c.prefix_ids for c in cuts] * len(names), adapter=ad, scaling=sc,
                       max_new_tokens=budget.ident_new_tokens, batch_size=budget.batch_size)
    ad, sc = per_row(len(lines))
    line_out = complete(model, tokenizer, [c.prefix_ids for c in lines] * len(names), adapter=ad, scaling=sc,
                        max_new_tokens=budget.line_new_tokens, batch_size=budget.batch_size, stop_at_newline=True)
    out: dict[str, dict[str, Any]] = {}
    for k, arm in enumerate(names):
        losses = summarise_losses(loss_rows[k * len(chunks): (k + 1) * len(chunks)])
        im = identifier_metrics(cuts, cut_out[k * len(cuts): (k + 1) * len(cuts)], known)
        lm = line_metrics(lines, line_out[k * len(lines): (k + 1) * len(lines)])
        out[arm] = {"loss": losses["loss"], "ident_loss": losses["ident_loss"], "ident_em": im["ident_em"],
                    "invented_rate": im["invented_rate"], "line_em": lm["line_em"],
                    "line_edit_sim": lm["line_edit_sim"], "ident_em_in_prompt": im["ident_em_in_prompt"],
                    "ident_em_not_in_prompt": im["ident_em_not_in_prompt"], "n_chunks": len(chunks),
                    "n_tokens": losses["tokens"], "n_ident_tokens": losses["ident_tokens"], "n_cuts": im["n"],
                    "n_cuts_in_prompt": im["n_in_prompt"], "n_lines": lm["n"], "cut_mode": budget.mode}
        if records:
            out[arm]["cut_records"] = im["records"]
            out[arm]["line_records"] = lm["records"]
    return out


def score_adapter(model: nn.Module, tokenizer: Any, heldout: Mapping[str, str], ctx: RepoContext,
                  adapter: Tensors | None, scaling: float = 1.0, *, budget: MetricBudget = MetricBudget()
                  ) -> dict[str, Any]:
    """Score one adapter (None: the base model) on a repository's held-out files {path: text} within `budget`:
    teacher-forced `loss` and `ident_loss` (repository-identifier tokens, identifiers from `ctx`), identifier
    completion `ident_em` and `invented_rate` at cut points, generated next-line `line_em` / `line_edit_sim`,
    and the counts. A flat JSON-able dict (None where there was nothing to measure); deterministic.
    """
    return score_arms(model, tokenizer, heldout, ctx, {"adapter": (adapter, scaling)}, budget=budget)["adapter"]
