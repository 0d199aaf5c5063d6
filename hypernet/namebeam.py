"""Whole-name beam: choose the identifier a completion starts by the probability of the whole name.

Greedy decoding commits to a name's first piece before it has seen the rest: the piece with the highest
probability can start a name that is less likely, as a whole, than another one (`parse` + `_args` against
`parser`). Teacher-forced loss scores whole names, so a lower loss on a repository's identifiers reaches the
completions only if the decoder compares whole names too. At the point where a completion starts (or is inside)
an identifier, this module runs a small beam over the names that repository-vocabulary decoding allows
(`hypernet.decoding`) and returns the most probable complete one, scored as

    log P(pieces of the name) + log P(the name ends here),

where the end is every next token that does not continue the identifier (so `parse` is not favoured over
`parse_args` just for being shorter). Completion then goes on greedily after the chosen name.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from hypernet.decoding import VocabRows


@torch.no_grad()
def name_beam(model: nn.Module, prompt: list[int], rows: VocabRows, *, width: int = 4,
              max_tokens: int = 8) -> list[int] | None:
    """Token ids of the most probable whole allowed name to write after `prompt` (one sequence; `rows` its
    repository-vocabulary state, one row), or None where the best next token does not start or continue a name
    (punctuation, a number, a comment or string, a new name the prompt started) or no name ends within
    `max_tokens`. A name may end inside its last token (`foo(`): that token is part of the answer."""
    if rows.allowed(0) is None:
        return None
    device = next(model.parameters()).device
    ids = torch.tensor([prompt], device=device)
    mask = torch.ones_like(ids)
    out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
    return beam_from(model, out.cache, out.logits[:, -1], mask, rows, width=width, max_tokens=max_tokens)


@torch.no_grad()
def beam_from(model: nn.Module, cache: Any, logits: torch.Tensor, mask: torch.Tensor, rows: VocabRows, *,
              width: int = 4, max_tokens: int = 8) -> list[int] | None:
    """`name_beam` from a state already computed: `cache` of one sequence (it is consumed), `logits` [1, V] of
    its next token, `mask` [1, W] its attention mask (left padding allowed)."""
    ix = rows.vocab.index
    device = logits.device
    ends_inside = ix.ends_inside.to(device)
    continues = ix.no_ws.to(device)  # tokens that go on with the word being written
    name_start = (~ix.punct & ~ix.digit).to(device)
    logp = _logp(logits, ix.vocab_size)
    live: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[tuple[float, list[int]]] = []
    for step in range(max_tokens):
        cands: list[tuple[float, int, int]] = []  # (score, parent beam, token) of beams that go on
        for b, (toks, score) in enumerate(live):
            allowed = rows.allowed(b)
            if allowed is None:  # unconstrained (a comment, a string, a new name): nothing to choose from
                continue
            allowed = allowed.to(device)
            lp = logp[b]
            if step == 0 and not rows.word(b):
                best = int(lp.masked_fill(~allowed, -math.inf).argmax())
                if not bool(name_start[best]):
                    return None  # the completion does not start with a name here
                pool = allowed & name_start
            else:
                pool = allowed & continues
                if rows.is_name(b):  # the word may end here: every token that does not continue it
                    finished.append((score + float(torch.logsumexp(lp[~continues], 0)), toks))
            k = min(width, int(pool.sum()))
            if k == 0:
                continue
            top = lp.masked_fill(~pool, -math.inf).topk(k)
            for v, t in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                if ends_inside[t]:
                    finished.append((score + v, toks + [t]))
                else:
                    cands.append((score + v, b, t))
        cands.sort(reverse=True)
        cands = cands[:width]
        best_done = max((f[0] for f in finished), default=-math.inf)
        if not cands or cands[0][0] <= best_done:
            break  # scores only fall: no live beam can overtake the best finished name
        parents = [p for _, p, _ in cands]
        tokens = [t for _, _, t in cands]
        live = [(live[p][0] + [t], sc) for sc, p, t in cands]
        rows = rows.select(parents)
        rows.advance(tokens)
        cache.batch_select_indices(torch.tensor(parents, device=device))
        mask = torch.cat([mask[parents], torch.ones(len(parents), 1, dtype=mask.dtype, device=device)], 1)
        out = model(input_ids=torch.tensor(tokens, device=device)[:, None], attention_mask=mask,
                    position_ids=(mask.sum(-1, keepdim=True) - 1), cache=cache, use_cache=True, logits_to_keep=1)
        cache = out.cache
        logp = _logp(out.logits[:, -1], ix.vocab_size)
    if not finished:
        return None
    return max(finished, key=lambda f: f[0])[1]


def cache_rows(cache: Any, idx: torch.Tensor) -> Any:
    """A copy of a batch KV cache (transformers `DynamicCache`) holding only the rows `idx` (on its device)."""
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    new.batch_select_indices(idx)  # indexing copies the tensors: the batch cache is left as it was
    return new


def _logp(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Next-token log-probabilities [B, V] from logits [B, V] (padded to the index's vocabulary width)."""
    lp = logits.float().log_softmax(-1)
    if lp.shape[1] < vocab_size:
        lp = torch.nn.functional.pad(lp, (0, vocab_size - lp.shape[1]), value=-math.inf)
    return lp
