"""Greedy batched completion and teacher-forced losses under an optional LoRA (applied functionally, per row)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from hypernet.lora_apply import applied_lora
from hypernet.metrics.cuts import Chunk, tokenize
from hypernet.metrics.text import identifier_spans, mark_tokens

if TYPE_CHECKING:
    from hypernet.decoding import RepoVocabulary, VocabRows

Tensors = dict[str, tuple[torch.Tensor, torch.Tensor]]
AdapterArg = Tensors | Sequence[Tensors | None] | None


def stack_adapters(adapters: Sequence[Tensors | None], scalings: Sequence[float]) -> Tensors | None:
    """Per-row adapters -> one batch-expanded adapter {path: (A [N,R,in], B [N,out,R])} whose row i computes
    scalings[i] * B_i A_i x (use it with scaling 1.0). Ranks are zero-padded to the largest, modules unioned
    (a row without a module, or a None row, gets zeros there). None when no row has an adapter.
    """
    present = [a for a in adapters if a]
    if not present:
        return None
    paths = sorted({p for a in present for p in a})
    out: Tensors = {}
    for path in paths:
        ref_a, ref_b = next(a[path] for a in present if path in a)
        r = max(a[path][0].shape[-2] for a in present if path in a)
        dtype = ref_a.dtype
        big_a = torch.zeros(len(adapters), r, ref_a.shape[-1], dtype=dtype, device=ref_a.device)
        big_b = torch.zeros(len(adapters), ref_b.shape[-2], r, dtype=dtype, device=ref_b.device)
        for i, (ad, sc) in enumerate(zip(adapters, scalings, strict=False)):
            if not ad or path not in ad:
                continue
            a, b = ad[path]
            if a.dim() == 3:  # an already batch-expanded adapter: its rows must agree; take the first
                a, b = a[0], b[0]
            big_a[i, : a.shape[0]] = a.detach().to(dtype)
            big_b[i, :, : b.shape[1]] = b.detach().to(dtype) * sc
        out[path] = (big_a, big_b)
    return out


class _RowAdapters:
    """The adapter argument of `complete` / `chunk_losses`, resolved per batch of rows: one shared adapter is
    applied as is; a list is stacked only for the rows of the batch (a high-rank average adapter padded over
    every row at once would cost memory for nothing); caller-expanded [N, r, in] rows are selected."""

    def __init__(self, adapter: AdapterArg, scaling: float | Sequence[float], n: int) -> None:
        self.shared: Tensors | None = None
        self.rows: list[Tensors | None] | None = None
        self.expanded = False
        self.scaling = 1.0
        if adapter is None:
            return
        if isinstance(adapter, dict):
            if not isinstance(scaling, (int, float)):
                raise TypeError("one adapter takes one scaling")
            self.shared, self.scaling = adapter, float(scaling)
            self.expanded = bool(adapter) and next(iter(adapter.values()))[0].dim() == 3
            return
        self.rows = list(adapter)
        if len(self.rows) != n:
            raise ValueError(f"{len(self.rows)} adapters for {n} rows")
        self.scalings = [float(scaling)] * n if isinstance(scaling, (int, float)) else [float(x) for x in scaling]

    def batch(self, idx: Sequence[int]) -> tuple[Tensors | None, float]:
        """(tensors, scaling) for the rows `idx` (None: no adapter in this batch)."""
        if self.rows is not None:
            return stack_adapters([self.rows[i] for i in idx], [self.scalings[i] for i in idx]), 1.0
        if self.shared is not None and self.expanded:
            sel = torch.tensor(list(idx))
            return {p: (a.index_select(0, sel.to(a.device)), b.index_select(0, sel.to(b.device)))
                    for p, (a, b) in self.shared.items()}, self.scaling
        return self.shared, self.scaling


def _pad_id(tokenizer: Any) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


@torch.no_grad()
def _greedy(model: nn.Module, prompts: list[list[int]], max_new_tokens: int, pad: int, eos: int | None,
            use_cache: bool, stop_check: Any, vocab_rows: VocabRows | None = None,
            name_beam: int = 0) -> list[list[int]]:
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    new: list[torch.Tensor] = []
    past = None
    forced: list[list[int]] = []
    cur_ids, cur_mask = ids, mask
    for step in range(max_new_tokens):
        pos = (cur_mask.cumsum(-1) - 1).clamp(min=0)
        if use_cache:
            feed = cur_ids if past is None else cur_ids[:, -1:]
            out = model(input_ids=feed, attention_mask=cur_mask, position_ids=pos[:, -feed.shape[1]:],
                        cache=past, use_cache=True, logits_to_keep=1)
            past = out.cache
        else:
            out = model(input_ids=cur_ids, attention_mask=cur_mask, position_ids=pos, use_cache=False,
                        logits_to_keep=1)
        logits = out.logits[:, -1].float()
        if step == 0 and name_beam > 0 and vocab_rows is not None and use_cache:
            forced = _beam_heads(model, past, logits, cur_mask, vocab_rows, name_beam, max_new_tokens)
        if vocab_rows is not None:
            logits = vocab_rows.apply(logits)
        nxt = logits.argmax(-1)
        if forced:  # the whole names the beam chose are written as they are
            for r, head in enumerate(forced):
                if step < len(head):
                    nxt[r] = head[step]
        if vocab_rows is not None:
            vocab_rows.advance(torch.where(done, torch.full_like(nxt, -1), nxt).tolist())
        new.append(torch.where(done, torch.full_like(nxt, -1), nxt))  # -1: the row had finished
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        if eos is not None:
            done |= nxt == eos
        if stop_check is not None and step % 4 == 3:
            done |= stop_check(torch.stack(new, 1))
        if bool(done.all()):
            break
        cur_ids = torch.cat([cur_ids, nxt[:, None]], 1)
        cur_mask = torch.cat([cur_mask, torch.ones_like(nxt)[:, None]], 1)
    gen = torch.stack(new, 1).tolist()
    out_rows = []
    for row in gen:
        for k, t in enumerate(row):
            if t == -1 or t == eos:
                row = row[:k]
                break
        out_rows.append(row)
    return out_rows


def complete(model: nn.Module, tokenizer: Any, prompts_ids: Sequence[Sequence[int]], *, max_new_tokens: int,
             adapter: AdapterArg = None, scaling: float | Sequence[float] = 1.0, batch_size: int = 16,
             use_cache: bool = True, stop_at_newline: bool = False,
             vocab: RepoVocabulary | None = None, name_beam: int = 0) -> list[str]:
    """Greedy completions (decoded text of the new tokens, up to EOS) for token-id prompts, batched with left
    padding and an attention mask, with the KV cache.

    `adapter`: None (base model), one adapter {module path: (A [r,in], B [out,r])} (or batch-expanded
    [N,r,in] / [N,out,r] rows matching the prompts) applied with `scaling`, or a list with one adapter (or None)
    per prompt, with `scaling` one float or one per prompt; per-row adapters are stacked (`stack_adapters`).
    The adapter is applied to the full model through forward hooks (`applied_lora`) for the duration of the
    call: the model must not serve other requests meanwhile. `stop_at_newline` ends early once every row
    has produced a line break past its first non-blank character (the rest of the line is all that is read).
    `vocab`: repository-vocabulary decoding (`hypernet.decoding`): identifiers stay on the repository's names.
    `name_beam` (with `vocab`): where a completion starts with (or inside) a name, choose that whole name by a beam
    of this width over the allowed names (`hypernet.namebeam`), then go on greedily.
    """
    prompts = [list(p) for p in prompts_ids]
    if not prompts:
        return []
    if any(not p for p in prompts):
        raise ValueError("empty prompt")
    resolved = _RowAdapters(adapter, scaling, len(prompts))
    pad, eos = _pad_id(tokenizer), tokenizer.eos_token_id

    def newline_check(gen: torch.Tensor) -> torch.Tensor:
        texts = tokenizer.batch_decode([[t for t in row if t >= 0] for row in gen.tolist()])
        return torch.tensor(["\n" in t.lstrip() for t in texts], device=gen.device)

    if name_beam > 0 and (resolved.rows is not None or resolved.expanded):
        batch_size = 1  # beams of one row share its adapter: one row per batch broadcasts over them
    # similar lengths together: less padding; results are put back in order
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    results: list[str] = [""] * len(prompts)
    for lo in range(0, len(order), batch_size):
        idx = order[lo: lo + batch_size]
        rows, sc = resolved.batch(idx)
        batch = [prompts[i] for i in idx]
        vrows = vocab.rows(tokenizer.batch_decode(batch)) if vocab is not None else None
        stop = newline_check if stop_at_newline else None
        if rows is None:
            gen = _greedy(model, batch, max_new_tokens, pad, eos, use_cache, stop, vrows, name_beam)
        else:
            with applied_lora(model, rows, sc):
                gen = _greedy(model, batch, max_new_tokens, pad, eos, use_cache, stop, vrows, name_beam)
        for i, g in zip(idx, gen, strict=False):
            results[i] = tokenizer.decode(g, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return results


def _beam_heads(model: nn.Module, past: Any, logits: torch.Tensor, mask: torch.Tensor, vocab_rows: VocabRows,
                width: int, max_tokens: int) -> list[list[int]]:
    """Per row of a batch just prefilled, the whole name its completion starts with ([] where none), chosen by
    `hypernet.namebeam` from a copy of that row's KV cache."""
    from hypernet.namebeam import beam_from, cache_rows

    heads: list[list[int]] = []
    for r in range(logits.shape[0]):
        head = None
        if vocab_rows.allowed(r) is not None:  # a row with nothing to choose from costs no cache copy
            row = torch.tensor([r], device=logits.device)
            head = beam_from(model, cache_rows(past, row), logits[r: r + 1], mask[r: r + 1],
                             vocab_rows.select([r]), width=width, max_tokens=max_tokens)
        heads.append(head or [])
    return heads


@torch.no_grad()
def chunk_losses(model: nn.Module, chunks: Sequence[Chunk], *, adapter: AdapterArg = None,
                 scaling: float | Sequence[float] = 1.0, batch_size: int = 8) -> list[dict[str, float]]:
    """Per chunk, teacher-forced next-token cross-entropy summed over all predicted tokens and over the
    repository-identifier tokens: [{"ce_sum", "n", "ident_ce_sum", "n_ident"}] (position 0 is never predicted).
    `adapter` / `scaling` as in `complete` (a list: one adapter per chunk).
    """
    chunks = list(chunks)
    resolved = _RowAdapters(adapter, scaling, len(chunks))
    device = next(model.parameters()).device
    out: list[dict[str, float]] = []
    for lo in range(0, len(chunks), batch_size):
        part = chunks[lo: lo + batch_size]
        width = max(len(c.ids) for c in part)
        ids = torch.tensor([c.ids + [0] * (width - len(c.ids)) for c in part], device=device)
        mask = torch.tensor([[1] * len(c.ids) + [0] * (width - len(c.ids)) for c in part], device=device)
        ident = torch.tensor([c.ident + [False] * (width - len(c.ids)) for c in part], device=device)
        rows, sc = resolved.batch(range(lo, lo + len(part)))
        if rows is None:
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        else:
            with applied_lora(model, rows, sc):
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        ce = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
        valid = mask[:, 1:].bool()
        idm = ident[:, 1:] & valid
        for k in range(len(part)):
            out.append({"ce_sum": float(ce[k][valid[k]].sum()), "n": int(valid[k].sum()),
                        "ident_ce_sum": float(ce[k][idm[k]].sum()), "n_ident": int(idm[k].sum())})
    return out


def summarise_losses(rows: Sequence[dict[str, float]]) -> dict[str, float | int | None]:
    """Token-weighted means over chunks: {"loss", "ident_loss" (None without identifier tokens), "tokens",
    "ident_tokens"}."""
    n = sum(r["n"] for r in rows)
    ni = sum(r["n_ident"] for r in rows)
    return {"loss": sum(r["ce_sum"] for r in rows) / n if n else None,
            "ident_loss": sum(r["ident_ce_sum"] for r in rows) / ni if ni else None,
            "tokens": n, "ident_tokens": ni}


def token_losses_on_text(model: nn.Module, tokenizer: Any, texts: Sequence[str],
                         repo_idents: set[str] | frozenset[str], adapter: AdapterArg = None,
                         scaling: float | Sequence[float] = 1.0, seq_len: int = 128) -> dict[str, float | int | None]:
    """Teacher-forced mean loss of each text's first `seq_len` tokens: over all predicted tokens (`loss`) and over
    the tokens of repository identifiers (`ident_loss`, tokens marked by character span, as the training corpus
    marks them), token-weighted over the texts; also the token counts. `adapter` as in `complete`.
    """
    chunks = []
    for text in texts:
        ids, offsets = tokenize(tokenizer, text)
        marks = mark_tokens(offsets, identifier_spans(text, repo_idents))
        if len(ids) >= 2:
            chunks.append(Chunk("", ids[:seq_len], marks[:seq_len]))
    if isinstance(adapter, (list, tuple)) and len(chunks) != len(adapter):
        raise ValueError("one adapter per text, and every text needs two tokens")
    return summarise_losses(chunk_losses(model, chunks, adapter=adapter, scaling=scaling))
