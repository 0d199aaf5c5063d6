"""Repository-vocabulary decoding: keep the identifiers a completion writes on names that exist.

The generated adapter lowers the loss of a repository's identifiers, but greedy decoding composes them from
sub-word pieces and often ends on a name that exists nowhere (`stop_servers` for `stop_server`). This module
masks (or, with a finite `bias`, penalises) the tokens that would make the identifier being written something
that is neither a name the repository knows (`hypernet.metrics.known_identifiers`: its definitions, imports,
uses, builtins) nor a word of the prompt. Nothing else is touched: numbers, punctuation, whitespace, comments and
string literals decode as before, and a partial name the prompt already started that matches no known name
(a user writing a new name) is left alone.

    index = TokenIndex.build(tokenizer)              # once per tokenizer (about 1 s for a 49k vocabulary)
    vocab = RepoVocabulary(index, names)             # once per repository
    rows = vocab.rows(prompt_texts)                  # one state per sequence of a batch
    logits = rows.apply(logits)                      # each step, before argmax / sampling
    rows.advance(next_token_ids)
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

_PIECE = re.compile(r"(\s*)([A-Za-z0-9_]*)(.*)", re.DOTALL)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TRAILING_WORD = re.compile(r"[A-Za-z0-9_]+$")
# lines that are code, not docstring prose (keywords are lower case; prose lines rarely start with these shapes)
_CODE_LINE = re.compile(r"^[ \t]*(?:(?:def|class)[ \t]+\w+[ \t]*[(:]|(?:return|raise|assert|import)\b[ \t]*\S"
                        r"|(?:if|elif|for|while|with|try|except|else)\b.*:[ \t]*$"
                        r"|(?:with|if|for|while|return|assert|raise)\b.*\w[(\[]|\w+(?:\.\w+)*[ \t]*=[ \t]*\S)",
                        re.MULTILINE)


def vocab_arm_suffix(bias: float, beam: int = 0) -> str:
    """How an evaluation names an arm decoded with this penalty: "+vocab" (masked) or "+vocab3" (3 nats), then
    "+beam4" when names are chosen whole by a beam of that width (`hypernet.namebeam`)."""
    return ("+vocab" if math.isinf(bias) else f"+vocab{bias:g}") + (f"+beam{beam}" if beam > 0 else "")


def parse_arm_suffix(suffix: str) -> tuple[float, int] | None:
    """(penalty, beam width) of a `vocab_arm_suffix`; None for anything else (plain decoding: "")."""
    m = re.fullmatch(r"\+vocab([0-9.e+-]*?)(?:\+beam(\d+))?", suffix)
    if not m:
        return None
    return (float(m.group(1)) if m.group(1) else math.inf), int(m.group(2) or 0)


def describe_arm_suffix(suffix: str) -> str:
    """A person's words for a suffix of `vocab_arm_suffix` ("" for plain decoding)."""
    parsed = parse_arm_suffix(suffix)
    if parsed is None:
        return suffix
    bias, beam = parsed
    text = ", repository-vocabulary decoding" + ("" if math.isinf(bias) else f" (penalty {bias:g})")
    return text + (f", whole-name beam {beam}" if beam else "")


@dataclass
class TokenIndex:
    """Each vocabulary token split as (leading whitespace, identifier-character run, rest), indexed by run.

    `cont[run]`: tokens without leading whitespace whose text is exactly `run` (they continue the word being
    written); `cont_end[run]`: the same run followed by a non-identifier character (the word ends inside the
    token); `ws[run]` / `ws_end[run]`: the same after leading whitespace (a new word starts). `punct`: tokens
    whose identifier run is empty or a number after whitespace, or that start with punctuation (they end the
    current word and start none we constrain); `digit`: tokens without whitespace starting with a digit.
    """

    vocab_size: int
    cont: dict[str, list[int]]
    cont_end: dict[str, list[int]]
    ws: dict[str, list[int]]
    ws_end: dict[str, list[int]]
    punct: torch.Tensor  # bool [V]
    digit: torch.Tensor  # bool [V]
    pieces: list[str]  # each token's decoded text
    no_ws: torch.Tensor  # bool [V]: the tokens of `cont` and `cont_end` (no leading whitespace, a run)
    ends_inside: torch.Tensor  # bool [V]: the tokens of `cont_end` and `ws_end` (a name ends inside: `foo(`)

    @classmethod
    def build(cls, tokenizer: Any, vocab_size: int | None = None) -> TokenIndex:
        """Index `tokenizer`'s vocabulary; `vocab_size` (the model's logits width) may exceed the tokenizer's."""
        n_tok = len(tokenizer)
        size = max(vocab_size or 0, n_tok)
        pieces = tokenizer.batch_decode([[i] for i in range(n_tok)], skip_special_tokens=False,
                                        clean_up_tokenization_spaces=False)
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        cont: dict[str, list[int]] = {}
        cont_end: dict[str, list[int]] = {}
        ws: dict[str, list[int]] = {}
        ws_end: dict[str, list[int]] = {}
        punct = torch.zeros(size, dtype=torch.bool)
        digit = torch.zeros(size, dtype=torch.bool)
        for i, text in enumerate(pieces):
            m = _PIECE.match(text)
            lead, run, rest = (m.group(1), m.group(2), m.group(3)) if m else ("", "", text)
            if i in special or not text:
                punct[i] = True
                continue
            if not run or (lead and run[0].isdigit()):
                punct[i] = True
            elif lead:
                (ws_end if rest else ws).setdefault(run, []).append(i)
            else:
                digit[i] = run[0].isdigit()  # a number when it starts a word, part of a name inside one
                (cont_end if rest else cont).setdefault(run, []).append(i)
        punct[n_tok:] = True  # padding rows of the embedding: never produced in practice, never constrained
        return cls(size, cont, cont_end, ws, ws_end, punct, digit, pieces, _mask(size, cont, cont_end),
                   _mask(size, cont_end, ws_end))


def _mask(size: int, *by_run: dict[str, list[int]]) -> torch.Tensor:
    """bool [size]: True at every token id listed in the given run -> ids tables."""
    mask = torch.zeros(size, dtype=torch.bool)
    ids = [i for d in by_run for lst in d.values() for i in lst]
    if ids:
        mask[torch.tensor(ids)] = True
    return mask


class RepoVocabulary:
    """The names one repository allows, and the token masks that follow from them."""

    def __init__(self, index: TokenIndex, names: Iterable[str], bias: float = math.inf) -> None:
        self.index = index
        self.bias = float(bias)
        self.names = sorted({n for n in names if _WORD.fullmatch(n)})
        self._name_set = frozenset(self.names)
        self._start = self._start_mask(self.names)
        self._cont_cache: dict[str, torch.Tensor | None] = {}

    def _start_mask(self, names: Iterable[str]) -> torch.Tensor:
        """Tokens that may start a new word: their run is a prefix of a name (or a whole name, if the word ends)."""
        ix = self.index
        mask = torch.zeros(ix.vocab_size, dtype=torch.bool)
        ids: list[int] = []
        seen: set[str] = set()
        for n in names:
            for k in range(1, len(n) + 1):
                p = n[:k]
                if p not in seen:
                    seen.add(p)
                    ids += ix.cont.get(p, []) + ix.ws.get(p, [])
            ids += ix.cont_end.get(n, []) + ix.ws_end.get(n, [])
        if ids:
            mask[torch.tensor(ids)] = True
        return mask

    def _continuations(self, word: str, names: Sequence[str]) -> list[int]:
        """Tokens that keep `word` on the way to one of `names` (sorted) or finish it as one of them."""
        ix = self.index
        ids: list[int] = []
        lo = bisect.bisect_left(names, word)
        seen: set[str] = set()
        for n in names[lo:]:
            if not n.startswith(word):
                break
            rem = n[len(word):]
            for k in range(1, len(rem) + 1):
                p = rem[:k]
                if p not in seen:
                    seen.add(p)
                    ids += ix.cont.get(p, [])
            if rem:
                ids += ix.cont_end.get(rem, [])
        return ids

    def _has_prefix(self, word: str, names: Sequence[str]) -> bool:
        lo = bisect.bisect_left(names, word)
        return lo < len(names) and names[lo].startswith(word)

    def rows(self, prompt_texts: Sequence[str]) -> VocabRows:
        """Decoding state for one batch: one row per prompt (the prompt's own words are allowed names too)."""
        return VocabRows(self, list(prompt_texts))


class VocabRows:
    """Per-row state of `RepoVocabulary` over a batch: where each row is (word being written, comment, string)."""

    def __init__(self, vocab: RepoVocabulary, prompts: list[str]) -> None:
        self.vocab = vocab
        self.texts = [p[-4096:] for p in prompts]
        self._triple = [p.count('"""') + p.count("'''") for p in prompts]
        base = vocab._name_set
        # the prompt's words are names too, except the partial word it ends on (that is what is being written)
        self._extra: list[list[str]] = [sorted(set(_WORD.findall(_TRAILING_WORD.sub("", p))) - base)
                                        for p in prompts]
        self._extra_start: list[torch.Tensor | None] = [
            vocab._start_mask(e) if e else None for e in self._extra]
        self.active = [True] * len(prompts)

    def _free(self, r: int) -> bool:
        """Is row r inside a comment or a string literal (where names are not constrained)?"""
        if self._triple[r] % 2 and not self._code_after_last_triple(r):
            return True
        line = self.texts[r].rsplit("\n", 1)[-1]
        code = re.sub(r"'(\\.|[^'\\])*'|\"(\\.|[^\"\\])*\"", "", line)
        return "#" in code or code.count('"') % 2 == 1 or code.count("'") % 2 == 1

    def _code_after_last_triple(self, r: int) -> bool:
        """An odd number of triple quotes, but code lines after the last one: the prompt's window began inside a
        docstring (a cut from the middle of a file), so the parity is off by one and this is code."""
        text = self.texts[r]
        last = max(text.rfind('"""'), text.rfind("'''"))
        return last >= 0 and bool(_CODE_LINE.search(text[last + 3:]))

    def word(self, r: int) -> str:
        """The identifier row r is writing ("" between words)."""
        m = _TRAILING_WORD.search(self.texts[r])
        return m.group() if m else ""

    def is_name(self, r: int) -> bool:
        """Is the word row r is writing a whole allowed name (known to the repository or a word of the prompt)?"""
        word, extra = self.word(r), self._extra[r]
        if word in self.vocab._name_set:
            return True
        k = bisect.bisect_left(extra, word)
        return bool(word) and k < len(extra) and extra[k] == word

    def select(self, rows: Sequence[int]) -> VocabRows:
        """A new state whose row i is a copy of row `rows[i]` (beam search forks and prunes rows)."""
        out = VocabRows.__new__(VocabRows)
        out.vocab = self.vocab
        out.texts = [self.texts[r] for r in rows]
        out._triple = [self._triple[r] for r in rows]
        out._extra = [self._extra[r] for r in rows]
        out._extra_start = [self._extra_start[r] for r in rows]
        out.active = [self.active[r] for r in rows]
        return out

    def allowed(self, r: int) -> torch.Tensor | None:
        """Boolean mask of the tokens row r may produce next; None where nothing is constrained."""
        v, ix = self.vocab, self.vocab.index
        if not self.active[r] or self._free(r):
            return None
        word = self.word(r)
        extra = self._extra[r]
        extra_start = self._extra_start[r]
        start = v._start if extra_start is None else v._start | extra_start
        if not word:
            return ix.punct | ix.digit | start
        if word[0].isdigit():
            return None  # a number
        in_base, in_extra = v._has_prefix(word, v.names), v._has_prefix(word, extra)
        if not (in_base or in_extra):
            return None  # a new name the prompt started: leave it alone
        ids = v._continuations(word, v.names) if in_base else []
        if in_extra:
            ids += v._continuations(word, extra)
        mask = torch.zeros(ix.vocab_size, dtype=torch.bool)
        if ids:
            mask[torch.tensor(ids)] = True
        if self.is_name(r):
            ws_start = start & ~ix.no_ws
            mask |= ix.punct | ws_start
        return mask

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Mask (bias = inf) or penalise by `bias` the disallowed tokens of each row of `logits` [B, V], in place."""
        for r in range(logits.shape[0]):
            mask = self.allowed(r)
            if mask is None:
                continue
            mask = mask[: logits.shape[1]].to(logits.device)
            if not bool(mask.any()):
                continue
            if math.isinf(self.vocab.bias):
                logits[r].masked_fill_(~mask, float("-inf"))
            else:
                logits[r] -= (~mask).to(logits.dtype) * self.vocab.bias
        return logits

    def advance(self, token_ids: Sequence[int]) -> None:
        """Append each row's new token; a row given a negative id has finished."""
        pieces = self.vocab.index.pieces
        for r, t in enumerate(token_ids):
            if t < 0 or t >= len(pieces):
                self.active[r] = t >= 0 and self.active[r]
                continue
            before = self.texts[r][-2:]  # a triple quote may straddle two tokens
            joined = before + pieces[t]
            self._triple[r] += joined.count('"""') + joined.count("'''") - before.count('"""') - before.count("'''")
            self.texts[r] = (self.texts[r] + pieces[t])[-4096:]
