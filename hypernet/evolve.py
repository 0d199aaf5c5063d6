"""Evolving adaptation: a per-repository recurrent state folded over each commit's diff.

The hypernetwork reads its token context as a *bag* of token vectors with log-count weights (token
vectors carry no position; see `Code2LoRAHypernet.generate`). The evolving state is exactly that
bag: a weight per token id. It starts as the static context's bag; each commit folds in

    w <- decay * w + boost * count(added API text) - count(removed API text)     (floored at 0)

where the API text of a commit is the rendered signatures (and docstrings) of the definitions the
commit added or changed, and of those it removed. Recent APIs therefore weigh more than old ones,
names a commit removed fade out, and the adapter is regenerated from the state alone, at the cost of
encoding the diff rather than the repository. `decay` and `boost` are the recurrence's parameters;
they are stored with the state so a state is always read with the values that built it.

A hypernetwork that reads hidden states (v2) needs text in order, not a bag: its state is the same recurrence
over *lines* of API text (`EvolvingState.lines`), and the adapter is generated from those lines rendered
heaviest first, read by the base model like any context.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypernet.encoder import EncodedContext

if TYPE_CHECKING:
    from hypernet.context import RepoContext
    from hypernet.generator import AdapterGenerator
    from hypernet.pipeline import AdapterArtifact


class EvolveError(RuntimeError):
    """The generator cannot run in evolving mode (e.g. it has no token path)."""


@dataclass
class EvolvingState:
    """Token-id weights plus where they came from; JSON-serialisable and persisted per repository."""

    weights: dict[int, float]
    commit: str | None = None
    steps: int = 0
    decay: float = 0.8
    boost: float = 2.0
    max_tokens: int = 4096
    history: list[str] = field(default_factory=list)  # commits folded in, oldest first (bounded)
    lines: dict[str, float] = field(default_factory=dict)  # API line -> weight (hidden-state hypernetworks)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (weights rounded so the digest is stable across platforms)."""
        out: dict[str, Any] = {"weights": {str(k): round(v, 6) for k, v in sorted(self.weights.items())}, "commit": self.commit,
               "steps": self.steps, "decay": self.decay, "boost": self.boost, "max_tokens": self.max_tokens,
               "history": self.history[-64:]}
        if self.lines:  # ordered pairs: the order breaks weight ties when the lines are rendered
            out["lines"] = [[k, round(v, 6)] for k, v in self.lines.items()]
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EvolvingState:
        """Inverse of `to_json`."""
        return cls(weights={int(k): float(v) for k, v in d["weights"].items()}, commit=d.get("commit"),
                   steps=int(d.get("steps", 0)), decay=float(d.get("decay", 0.8)), boost=float(d.get("boost", 2.0)),
                   max_tokens=int(d.get("max_tokens", 4096)), history=list(d.get("history", [])),
                   lines={str(k): float(v) for k, v in d.get("lines", [])})

    @property
    def digest(self) -> str:
        """Content digest of the state (the adapter cache key's context part in evolving mode)."""
        data = self.to_json()
        key = {"evolving": data["weights"]} if not self.lines else {"evolving": data["weights"], "lines": data["lines"]}
        body = json.dumps(key, sort_keys=True).encode()
        return hashlib.sha256(body).hexdigest()


def reads_hidden(generator: AdapterGenerator) -> bool:
    """Does the generator's token path read hidden states (text in order) rather than a bag of embeddings?"""
    tokens = generator.encoder.tokens
    return tokens is not None and tokens.source != "embeddings"


def _api_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def _token_ids(generator: AdapterGenerator, text: str) -> list[int]:
    tokens = generator.encoder.tokens
    if tokens is None or tokens.source != "embeddings":
        raise EvolveError("evolving mode needs a hypernetwork with a token path")
    return tokens.token_ids(text).tolist()


def _bag(ids: Iterable[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for i in ids:
        out[i] = out.get(i, 0.0) + 1.0
    return out


def initial_state(ctx: RepoContext, generator: AdapterGenerator, commit: str | None,
                  decay: float = 0.8, boost: float = 2.0) -> EvolvingState:
    """The state of a freshly registered repository: the static context's token bag."""
    text = ctx.render(budget_tokens=generator.token_budget, count_tokens=generator.encoder.tokens.count_tokens)
    if reads_hidden(generator):
        return EvolvingState(weights={}, lines=dict.fromkeys(_api_lines(text), 1.0), commit=commit, decay=decay,
                             boost=boost, history=[commit] if commit else [])
    return EvolvingState(weights=_bag(_token_ids(generator, text)), commit=commit, decay=decay, boost=boost,
                         history=[commit] if commit else [])


def _definition_lines(ctx: RepoContext, paths: Iterable[str]) -> dict[tuple[str, str], str]:
    lines: dict[tuple[str, str], str] = {}
    for path in paths:
        facts = ctx.files.get(path)
        if facts is None:
            continue
        for d in facts.definitions:
            lines[(path, d.qualname)] = d.signature + (f"  # {d.doc}" if d.doc else "")
        for c in facts.constants:
            lines[(path, c.name)] = f"{c.name} = {c.value}"
    return lines


def diff_api_text(old: RepoContext, new: RepoContext) -> tuple[str, str]:
    """(added, removed) API text between two contexts: definitions that appeared or changed, and those that
    disappeared or changed (a changed signature is removed in its old form and added in its new one)."""
    changed = {p for p in set(old.files) | set(new.files)
               if (old.files[p].sha256 if p in old.files else None)
               != (new.files[p].sha256 if p in new.files else None)}
    before, after = _definition_lines(old, changed), _definition_lines(new, changed)
    added = [after[k] for k in sorted(after) if before.get(k) != after[k]]
    removed = [before[k] for k in sorted(before) if after.get(k) != before[k]]
    return "\n".join(added), "\n".join(removed)


def fold(state: EvolvingState, generator: AdapterGenerator, added_text: str, removed_text: str,
         commit: str | None) -> EvolvingState:
    """One recurrent step over a commit's diff; returns a new state (the input is not modified)."""
    history = (state.history + [commit])[-64:] if commit else state.history
    if reads_hidden(generator):
        lines = {k: v * state.decay for k, v in state.lines.items()}
        for ln in _api_lines(added_text):
            lines[ln] = lines.get(ln, 0.0) + state.boost
        for ln in _api_lines(removed_text):
            lines[ln] = lines.get(ln, 0.0) - 1.0
        kept_lines = sorted(((k, v) for k, v in lines.items() if v > 1e-3), key=lambda kv: -kv[1])  # stable
        return EvolvingState(weights={}, lines=dict(kept_lines[: state.max_tokens]), commit=commit,
                             steps=state.steps + 1, decay=state.decay, boost=state.boost,
                             max_tokens=state.max_tokens, history=history)
    weights = {k: v * state.decay for k, v in state.weights.items()}
    for i, n in _bag(_token_ids(generator, added_text)).items():
        weights[i] = weights.get(i, 0.0) + state.boost * n
    for i, n in _bag(_token_ids(generator, removed_text)).items():
        weights[i] = weights.get(i, 0.0) - n
    # Drop faded tokens; keep the heaviest `max_tokens` so the state stays bounded however long the history.
    kept = sorted(((k, v) for k, v in weights.items() if v > 1e-3), key=lambda kv: (-kv[1], kv[0]))
    return EvolvingState(weights=dict(kept[: state.max_tokens]), commit=commit, steps=state.steps + 1,
                         decay=state.decay, boost=state.boost, max_tokens=state.max_tokens, history=history)


def encode_state(state: EvolvingState, generator: AdapterGenerator, ctx: RepoContext | None = None) -> EncodedContext:
    """Evolving mode's encoded context: the state's token bag (or its API lines, heaviest first), read as is."""
    import torch

    tokens_encoder = generator.encoder.tokens
    if tokens_encoder is None:
        raise EvolveError("evolving mode needs a hypernetwork with a token path")
    if state.lines or reads_hidden(generator):
        # Heaviest (most recent) lines first: the encoder keeps the first `max_tokens` tokens.
        text = "\n".join(k for k, _ in sorted(state.lines.items(), key=lambda kv: -kv[1]))
        tokens = tokens_encoder.encode(text)
        log_count = None
    else:
        ids = sorted(state.weights) or [0]
        tokens = tokens_encoder.embeddings[torch.tensor(ids)].float()
        log_count = torch.tensor([math.log(max(state.weights.get(i, 1e-3), 1e-3)) for i in ids])
    pooled = None
    if generator.hypernet.config.use_sentence:
        if ctx is None or generator.encoder.sentence is None:
            raise EvolveError("this hypernetwork also reads sentence vectors: pass the current context")
        pooled = generator.encoder.sentence.pool(ctx.render_items(max_items=generator.max_items))
    return EncodedContext(pooled=pooled, tokens=tokens, log_count=log_count, merge_repeats=False)


def generate_from_state(state: EvolvingState, generator: AdapterGenerator, out_dir: Path,
                        ctx: RepoContext | None = None) -> AdapterArtifact:
    """Write the adapter the hypernetwork generates from `state` (content-addressed under `out_dir`)."""
    return generator.generate_from(lambda: encode_state(state, generator, ctx), out_dir,
                                   context_digest=state.digest, mode="evolving")
