"""Sampling completions and scoring them: left-padded [prefix | completion] batches, so the T completion tokens
are the last T positions whatever the prefix (the teacher's prefix carries the context, the student's does not).

Shared by the fine-tuning trainers (`training/finetune`) and the RL refinement (`hypernet/refine_rl.py`); `active`
is any context manager that yields the model to run (a LoRA applied with `hypernet.lora_apply.applied_lora`, a
student's adapter, the teacher). Library layer: imports nothing from `training/` or `service/`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PrefixCache:
    """Key/value states of a shared prefix (the teacher's context), computed once and reused by every call."""

    length: int
    kv: list[tuple[torch.Tensor, torch.Tensor]]

    def expand(self, n: int, config) -> object:
        """A fresh DynamicCache holding the prefix for n rows (calls append to it in place)."""
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=[(k.expand(n, -1, -1, -1).contiguous(), v.expand(n, -1, -1, -1).contiguous())
                                            for k, v in self.kv], config=config)


@torch.no_grad()
def prefix_cache(active: AbstractContextManager[nn.Module], ids: list[int]) -> PrefixCache | None:
    """The key/value cache of `ids` under the model (None for an empty prefix)."""
    if not ids:
        return None
    with active as model:
        out = model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1)
    kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
    return PrefixCache(len(ids), kv)


def _with_prefix(cache: PrefixCache | None, n: int, attn: torch.Tensor, model: nn.Module):
    """(past, full attention mask, position offset) for rows that continue after the cached prefix."""
    if cache is None:
        return None, attn, 0
    ones = torch.ones((n, cache.length), dtype=attn.dtype)
    return cache.expand(n, model.config), torch.cat([ones, attn], 1), cache.length


def left_pad(prefixes: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [N, L], attention mask [N, L]) with every prefix right-aligned."""
    width = max(len(p) for p in prefixes)
    ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prefixes), width), dtype=torch.long)
    for i, p in enumerate(prefixes):
        if p:
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
    return ids, mask


def completion_logits(active: AbstractContextManager[nn.Module], prefixes: list[list[int]],
                      completion: torch.Tensor, pad_id: int, cache: PrefixCache | None = None) -> torch.Tensor:
    """Logits [N, T, V] that predict each completion token given its prefix and the completion before it
    (after the cached shared prefix `cache`, when given)."""
    ids, mask = left_pad(prefixes, pad_id)
    full = torch.cat([ids, completion], 1)
    attn = torch.cat([mask, torch.ones_like(completion)], 1)
    pos = (attn.cumsum(1) - 1).clamp_min(0)  # left padding must not shift the positions of real tokens
    t = completion.shape[1]
    with active as model:
        past, attn_all, offset = _with_prefix(cache, full.shape[0], attn, model)
        out = model(input_ids=full, attention_mask=attn_all, position_ids=pos + offset, past_key_values=past,
                    use_cache=past is not None, logits_to_keep=t + 1)
    return out.logits[:, :-1].float()


def token_logps(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] per position: [N, T]."""
    return F.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def sample(active: AbstractContextManager[nn.Module], prefixes: list[list[int]], max_new: int, *, pad_id: int,
           eos_id: int | None, temperature: float = 1.0, generator: torch.Generator | None = None,
           cache: PrefixCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `max_new` tokens after each prefix (KV cache, plain temperature sampling); returns (tokens [N, T],
    mask [N, T]) where the mask covers tokens up to and including the first EOS."""
    ids, attn = left_pad(prefixes, pad_id)
    n = ids.shape[0]
    out = torch.full((n, max_new), pad_id, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    mask = torch.zeros((n, max_new))
    pos = (attn.cumsum(1) - 1).clamp_min(0)
    step_ids = ids
    with active as model:
        past, attn, offset = _with_prefix(cache, n, attn, model)
        pos = pos + offset
        for t in range(max_new):
            res = model(input_ids=step_ids, attention_mask=attn, position_ids=pos, past_key_values=past,
                        use_cache=True, logits_to_keep=1)
            past = res.past_key_values
            logits = res.logits[:, -1].float() / max(temperature, 1e-6)
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            out[:, t] = nxt
            mask[:, t] = (~done).float()
            if eos_id is not None:
                done |= nxt == eos_id
            if bool(done.all()):
                break
            step_ids = nxt.unsqueeze(1)
            attn = torch.cat([attn, torch.ones((n, 1), dtype=attn.dtype)], 1)
            pos = pos[:, -1:] + 1
    return out, mask
