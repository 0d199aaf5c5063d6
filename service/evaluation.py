"""Measured versions: the held-out split of a repository, scoring a new version against the base model and the
active version on it, and the promotion gate.

The split is made once, at the first ingest that finds enough files, and stored on the repository
(`Repository.eval_split`): a file is held out when a seeded hash of its path falls under a threshold (a higher
one for test files, which are held out preferably), plus the files listed in the record (the split makes sure
at least one file is held out). Held-out files never reach the hypernetwork or refinement: they see
`context_slice(ctx, held)`. The metric definitions are `hypernet.metrics` (shared with `code2lora eval`).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hypernet.context import RepoContext
    from service.settings import Settings
    from service.state import ServiceState

log = logging.getLogger(__name__)
Report = Callable[[float, str], None]

SPLIT_VERSION = 1
# Metrics where a higher value is better; every other gate metric (losses, invented rate) is lower-is-better.
HIGHER_IS_BETTER = ("ident_em", "ident_em_in_prompt", "ident_em_not_in_prompt", "line_em", "line_edit_sim")


# ---------------------------------------------------------------------------------------------- the split


def _unit(seed: int, path: str) -> float:
    """A stable uniform number in [0, 1) for a path (process- and platform-independent)."""
    from hypernet.metrics import stable_hash

    return stable_hash("heldout", seed, path) / 2**64


def _rule(split: Mapping[str, Any], path: str, is_test: bool) -> bool:
    threshold = split["test_fraction"] if is_test else split["fraction"]
    return _unit(int(split["seed"]), path) < float(threshold)


def make_split(ctx: RepoContext, *, seed: int, fraction: float, test_fraction: float, min_files: int,
               commit: str | None = None) -> dict[str, Any]:
    """The split record for `ctx`: the rule (seed, thresholds) and the files held out at split time.

    Too few files: a record with `too_small` and nothing held out (the split is tried again at a later ingest).
    Otherwise at least one file is held out (tests first, by hash) and at least half the files stay context.
    """
    files = ctx.files
    n = len(files)
    record: dict[str, Any] = {"version": SPLIT_VERSION, "seed": int(seed), "fraction": float(fraction),
                              "test_fraction": float(test_fraction), "files": n, "commit": commit}
    if n < min_files:
        return {**record, "too_small": True, "paths": []}
    held = sorted(p for p, f in files.items() if _rule(record, p, f.is_test))
    if not held:  # small repositories: the test file (else the file) with the lowest hash
        held = [min(files, key=lambda p: (not files[p].is_test, _unit(seed, p)))]
    limit = max(1, n // 2)
    if len(held) > limit:  # never hold out most of a repository: keep the lowest hashes, tests first
        held = sorted(sorted(held, key=lambda p: (not files[p].is_test, _unit(seed, p)))[:limit])
    return {**record, "too_small": False, "paths": held}


def heldout_paths(split: Mapping[str, Any] | None, ctx: RepoContext) -> set[str]:
    """The files of `ctx` held out by `split` (the recorded ones and any new file the rule picks)."""
    if not split or split.get("too_small"):
        return set()
    listed = set(split.get("paths") or ())
    return {p for p, f in ctx.files.items() if p in listed or _rule(split, p, f.is_test)}


def context_slice(ctx: RepoContext, held: set[str]) -> RepoContext:
    """`ctx` without the held-out files (what the hypernetwork and refinement may see); `ctx` itself if none."""
    if not held:
        return ctx
    from hypernet.context import RepoContext

    return RepoContext.build({p: f for p, f in ctx.files.items() if p not in held}, dict(ctx.skipped),
                             max_file_bytes=ctx.max_file_bytes, max_files=ctx.max_files, truncated=ctx.truncated)


def too_small_reason(split: Mapping[str, Any] | None, ctx: RepoContext) -> str | None:
    """"too small to measure: N files" when the split holds nothing out."""
    if split is None or split.get("too_small") or not heldout_paths(split, ctx):
        return f"too small to measure: {len(ctx.files)} files"
    return None


def ensure_split(state: ServiceState, repo_id: int, ctx: RepoContext, commit: str | None) -> dict[str, Any] | None:
    """The repository's stored split; made (and stored) now if there is none yet or the last try found too few
    files. None when the repository is gone."""
    from service.db.models import Repository

    s = state.settings
    with state.sessions.begin() as session:
        repo = session.get(Repository, repo_id)
        if repo is None:
            return None
        split = repo.eval_split
        if split is None or (split.get("too_small") and len(ctx.files) >= s.eval_min_files):
            split = make_split(ctx, seed=s.eval_split_seed, fraction=s.eval_heldout_fraction,
                               test_fraction=s.eval_heldout_test_fraction, min_files=s.eval_min_files, commit=commit)
            repo.eval_split = split
        return dict(split)


def read_texts(root: Path, paths: set[str] | list[str], max_bytes: int = 1_000_000) -> dict[str, str]:
    """{path: text} of files under `root` (unreadable or oversized ones skipped)."""
    out: dict[str, str] = {}
    for rel in sorted(paths):
        p = Path(root) / rel
        try:
            if p.is_symlink() or not p.is_file() or p.stat().st_size > max_bytes:
                continue
            out[rel] = p.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
    return out


@dataclass
class HeldOut:
    """What scoring needs: the held-out texts and the full context (its identifiers), or why there is none."""

    texts: dict[str, str]
    ctx: RepoContext
    reason: str | None = None  # "too small to measure: N files", or another reason not to measure
    paths: list[str] = field(default_factory=list)


def prepare(state: ServiceState, repo_id: int, ctx: RepoContext, checkout: Path,
            commit: str | None) -> tuple[RepoContext, HeldOut]:
    """(context the hypernetwork may see, the held-out slice) for a checkout at `commit`."""
    split = ensure_split(state, repo_id, ctx, commit)
    held = heldout_paths(split, ctx)
    reason = too_small_reason(split, ctx)
    texts = read_texts(checkout, held, state.settings.max_file_bytes) if held else {}
    if held and not any(t.strip() for t in texts.values()):
        reason = reason or f"held-out files unreadable ({len(held)} files)"
    return context_slice(ctx, held), HeldOut(texts, ctx, reason, sorted(held))


# ---------------------------------------------------------------------------------------------- the model


def _plain_view(model: Any) -> Any:
    """A second module tree over the engine model's own weight tensors (no copy), with the engine's stacked-LoRA
    wrappers replaced by their base Linear layers: forward hooks put on it never reach serving."""
    from service.engines.stacked_lora import StackedLoRALinear

    memo: dict[int, Any] = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    view = copy.deepcopy(model, memo)
    for module in list(view.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, StackedLoRALinear):
                setattr(module, name, child.base)
    return view.eval()


class ScoringModel:
    """The base model (and tokenizer) scoring and refinement run on, loaded once per process.

    With the in-process engine it is a view over the engine's already-loaded weights; otherwise (engine `none`,
    vLLM, an RQ worker) the base model is loaded once here. `lock` serialises the jobs that use it.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._key: Any = None
        self._pair: tuple[Any, Any] | None = None

    def get(self, state: ServiceState) -> tuple[Any, Any]:
        engine = state.serving_engine
        with self.lock:
            if engine is None and state.settings.engine == "local" and state.loop is not None:
                # In the API process the engine may still be starting: wait a little for it rather than
                # loading a second copy of the base model.
                deadline = time.monotonic() + 60
                while state.serving_engine is None and time.monotonic() < deadline:
                    time.sleep(0.2)
                engine = state.serving_engine
            # the local engine's weights and tokenizer (other engines have neither)
            model = getattr(engine, "model", None) if engine is not None else None
            tokenizer = getattr(engine, "tokenizer", None) if engine is not None else None
            if model is not None and tokenizer is not None:
                key = ("engine", id(engine))
                if self._key != key:
                    self._pair, self._key = (_plain_view(model), tokenizer), key
            elif self._pair is None or self._key != "own":
                from hypernet.basemodel import load_base_model, load_tokenizer
                from service.models import base_model_dir

                path = base_model_dir(state.settings)
                self._pair, self._key = (load_base_model(path), load_tokenizer(path)), "own"
            assert self._pair is not None
            return self._pair


# ---------------------------------------------------------------------------------------------- scoring


def metric_budget(settings: Settings) -> Any:
    """The count budget of one scoring, from the settings."""
    from hypernet.metrics import MetricBudget

    return MetricBudget(chunks=settings.eval_chunks, seq_len=settings.eval_seq_len, cuts=settings.eval_cuts,
                        lines=settings.eval_lines, seed=settings.eval_split_seed)


def load_tensors(path: Path) -> tuple[Any, float]:
    """(LoRA tensors, scaling alpha/r) of an adapter folder."""
    from hypernet.adapter import read_adapter, scaling

    config, tensors = read_adapter(Path(path))
    return tensors, scaling(config)


def _clean(arm: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in arm.items()
            if not isinstance(v, (list, dict))}


def score(state: ServiceState, held: HeldOut, arms: Mapping[str, tuple[Any, float] | None],
          report: Report | None = None) -> dict[str, Any]:
    """Score adapters ({arm: (tensors, scaling) or None for the base model}) on the held-out slice.

    Returns the `eval` block stored in a version's metrics: one flat dict of numbers per arm, the slice size,
    the budget and the wall time; or {"skipped": reason} when there is nothing to measure.
    """
    if held.reason is not None:
        return {"skipped": held.reason}
    from hypernet.metrics import score_arms

    budget = metric_budget(state.settings)
    scoring = scoring_model(state)
    if report is not None:
        report(0.0, f"scoring {', '.join(arms)} on {len(held.texts)} held-out files")
    t0 = time.perf_counter()
    with scoring.lock:
        model, tokenizer = scoring.get(state)
        out = score_arms(model, tokenizer, held.texts, held.ctx,
                         {k: (v if v is not None else (None, 1.0)) for k, v in arms.items()}, budget=budget)
    seconds = time.perf_counter() - t0
    return {**{arm: _clean(out[arm]) for arm in arms}, "heldout_files": len(held.texts),
            "budget": budget.to_json(), "seconds": round(seconds, 3)}


def scoring_model(state: ServiceState) -> ScoringModel:
    """The process's `ScoringModel` (one per state)."""
    with _STATE_LOCK:
        if state.scoring is None:
            state.scoring = ScoringModel()
        return state.scoring


_STATE_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------- the gate


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def gate(eval_block: Mapping[str, Any] | None, metric: str, tolerance: float, *, has_active: bool,
         kind: str = "generated") -> dict[str, Any]:
    """Whether a candidate may become active, and why: {"promoted", "reason", "metric", "tolerance", ...}.

    The first version is always promoted (there is nothing else to serve); its numbers against the base model
    are recorded. A candidate that could not be measured (too small, scoring failed) is promoted when it was
    generated from the new context, and kept inactive when it is a refinement (nothing shows it is better).
    """
    out: dict[str, Any] = {"metric": metric, "tolerance": tolerance}
    block = eval_block or {}
    cand = block.get("candidate") if isinstance(block.get("candidate"), dict) else None
    if not has_active:
        note = "first version"
        base = block.get("base") if isinstance(block.get("base"), dict) else None
        if cand and base and cand.get(metric) is not None and base.get(metric) is not None:
            note += f" ({metric} {_fmt(cand[metric])} vs base {_fmt(base[metric])})"
        return {**out, "promoted": True, "reason": note}
    active = block.get("active") if isinstance(block.get("active"), dict) else None
    if cand is None or active is None or cand.get(metric) is None or active.get(metric) is None:
        why = block.get("skipped") or block.get("error") or f"no {metric} to compare"
        if kind == "refined":
            return {**out, "promoted": False, "reason": f"not measured ({why})"}
        return {**out, "promoted": True, "reason": f"not measured ({why})"}
    c, a = float(cand[metric]), float(active[metric])
    if metric in HIGHER_IS_BETTER:
        ok = c >= a - tolerance
        rel = ">=" if ok else "<"
        reason = f"{metric} {_fmt(c)} {rel} active {_fmt(a)} - {_fmt(tolerance)}"
    else:
        ok = c <= a + tolerance
        rel = "<=" if ok else ">"
        reason = f"{metric} {_fmt(c)} {rel} active {_fmt(a)} + {_fmt(tolerance)}"
    return {**out, "promoted": ok, "reason": reason, "candidate": c, "active": a}
