"""Rewards for reinforcement learning on code completions, and their group-relative advantages.

- `chrf`: the similarity reward of the fine-tuning RL path (sentence chrF against the true continuation).
- `identifier_reward`: a verifiable reward that needs no teacher: every identifier a rollout *uses* (in code, not
  in a comment or a string literal, not a name it defines itself) scores +1 when it exists for the repository
  (`hypernet.metrics.known_identifiers`: symbol table, imports, builtins) or in the prompt, -1 when it does not;
  the reward is the mean over the rollout's identifiers (0 when it uses none).
- `group_advantages`: GRPO's reward minus its group's mean (over the G rollouts of one prompt), optionally scaled.

Library layer: imports nothing from `training/` or `service/` (`training/finetune` imports these from here).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from hypernet.metrics.text import words


@lru_cache(maxsize=1)
def _chrf() -> Any:
    from sacrebleu.metrics import CHRF

    return CHRF()  # sacrebleu defaults: character n-grams up to 6, no word n-grams, beta = 2


def chrf(hypothesis: str, reference: str) -> float:
    """Sentence chrF in [0, 1] (sacrebleu's score / 100)."""
    return float(_chrf().sentence_score(hypothesis, [reference]).score) / 100.0


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO advantages: r_i minus its group's mean, divided by (group std + eps) when `scale` (unbiased std, as
    TRL); rewards are [N] with the G samples of a prompt adjacent."""
    r = rewards.float().view(-1, group_size)
    adv = r - r.mean(1, keepdim=True)
    if scale:
        adv = adv / (r.std(1, keepdim=True) + eps)
    return adv.view(-1)


# One lexical item of Python-like code: a triple quote, a comment, a one-line string literal (possibly cut off at
# the end of the line), an identifier (not the tail of a number or longer word), a number, or anything else.
_LEX = re.compile(
    r"(?P<tq>\"\"\"|''')"
    r"|(?P<comment>#[^\n]*)"
    r"|(?P<str>\"(?:\\.|[^\"\\\n])*\"?|'(?:\\.|[^'\\\n])*'?)"
    r"|(?P<word>(?<![A-Za-z0-9_])[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<num>[0-9][A-Za-z0-9_.]*)"
)
_BINDS_BEFORE = re.compile(r"\b(def|class|as|import|lambda|global|nonlocal)\s+$|\bfor\s+[\w\s,()*]*$")
_BINDS_AFTER = re.compile(r"\s*(:[^=\n]*)?=(?!=)")


@dataclass(frozen=True)
class UsedName:
    """An identifier of a rollout's code: `binds` when the rollout defines it there (assignment target, keyword
    argument, parameter, def / class / import / for / as name)."""

    name: str
    start: int  # character offset in the completion (negative when it began in the prompt)
    binds: bool
    partial: bool = False  # touches the end of a truncated rollout: may be the start of a longer name


def rollout_identifiers(prompt: str, completion: str, *, truncated: bool = True) -> list[UsedName]:
    """The identifiers the completion writes in code after `prompt`, in order. Comments and string literals are
    skipped (a triple-quoted string open at the end of the prompt included); a word that the prompt started is
    counted whole; with `truncated` (the rollout stopped at its token limit) a word that touches the end of the
    completion is marked `partial`, since it may be cut short.
    """
    text = prompt + completion
    cut = len(prompt)
    out: list[UsedName] = []
    pos = 0
    in_triple: str | None = None
    while pos < len(text):
        if in_triple is not None:
            end = text.find(in_triple, pos)
            if end < 0:
                break
            pos, in_triple = end + 3, None
            continue
        m = _LEX.search(text, pos)
        if m is None:
            break
        pos = m.end()
        if m.lastgroup == "tq":
            in_triple = m.group()
            continue
        if m.lastgroup != "word" or m.end() <= cut:
            continue
        line_start = text.rfind("\n", 0, m.start()) + 1
        before = text[line_start: m.start()]
        after = text[m.end(): m.end() + 200]
        head = before.lstrip()
        param = head.startswith(("def ", "async def ")) and before.rstrip()[-1:] in ("(", ",", "*")
        binds = bool(_BINDS_BEFORE.search(before) or _BINDS_AFTER.match(after) or param)
        out.append(UsedName(m.group(), m.start() - cut, binds, truncated and m.end() == len(text)))
    return out


@dataclass(frozen=True)
class IdentifierReward:
    """A rollout's identifier reward and its counts: `known` (+1 each), `invented` (-1 each), `names` invented."""

    reward: float
    known: int
    invented: int
    names: tuple[str, ...] = ()


def identifier_reward(prompt: str, completion: str, known: set[str] | frozenset[str], *,
                      truncated: bool = True, extra: Iterable[str] = ()) -> IdentifierReward:
    """+1 per used identifier that is in `known`, in the prompt's words, in `extra` or bound earlier by the
    rollout itself; -1 per other one; the mean over the used identifiers (0.0 when there are none). A word cut
    short by the token limit counts -1 when no allowed name starts with it, and not at all otherwise."""
    allowed = words(prompt) | set(extra)
    good, bad, names = 0, 0, []
    for used in rollout_identifiers(prompt, completion, truncated=truncated):
        if used.partial and not used.binds:
            if used.name in known or used.name in allowed or _starts_a_name(used.name, known, allowed):
                continue
            bad += 1
            names.append(used.name)
            continue
        if used.binds:
            allowed.add(used.name)
            continue
        if used.name in known or used.name in allowed:
            good += 1
        else:
            bad += 1
            names.append(used.name)
    n = good + bad
    return IdentifierReward((good - bad) / n if n else 0.0, good, bad, tuple(names))


_SORTED: dict[int, tuple[frozenset[str] | set[str], list[str]]] = {}


def _starts_a_name(word: str, known: set[str] | frozenset[str], allowed: set[str]) -> bool:
    """Does some name of `known` or `allowed` start with `word`? (`known` is sorted once per set object.)"""
    cached = _SORTED.get(id(known))
    if cached is None or cached[0] is not known:
        cached = (known, sorted(known))
        _SORTED.clear()
        _SORTED[id(known)] = cached
    names = cached[1]
    i = bisect.bisect_left(names, word)
    return (i < len(names) and names[i].startswith(word)) or any(n.startswith(word) for n in allowed)
