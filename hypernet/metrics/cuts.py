"""Where to cut held-out files: identifier cut points, next-line cases and loss chunks (all deterministic)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hypernet.metrics.text import IDENT_RE, identifier_spans, mark_tokens, stable_hash, words

MIN_PREFIX_TOKENS = 8
CUT_MODES = ("boundary", "inside")


@dataclass
class Cut:
    """A prompt that stops right before (mode "boundary") or inside (mode "inside") a use of a repository identifier.

    `target` is the whole identifier; `partial` is the part of it already in the prompt ("" for boundary cuts);
    `in_prompt` says whether the identifier occurs in the prompt window before the cut.
    """

    path: str
    prefix_ids: list[int]
    prefix_text: str
    target: str
    in_prompt: bool = False
    mode: str = "boundary"
    partial: str = ""
    line: int = 0


@dataclass
class LineCase:
    """A prompt that stops at the start of a line (at a token boundary); `target` is the line's stripped text."""

    path: str
    prefix_ids: list[int]
    prefix_text: str
    target: str
    line: int = 0


@dataclass
class Chunk:
    """A window of a held-out file for teacher-forced loss; `ident[t]` marks repository-identifier tokens."""

    path: str
    ids: list[int]
    ident: list[bool]
    start: int = 0  # token offset of the window in its file


def tokenize(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """(ids, character offsets) without special tokens; needs a fast tokenizer."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _token_at(offsets: list[tuple[int, int]], char: int, lo: int = 0) -> int | None:
    """Index of the first token (from `lo`) whose span ends after `char` (the token that holds or follows it)."""
    for i in range(lo, len(offsets)):
        if offsets[i][1] > char:
            return i
    return None


def _is_definition(line: str, col: int, name: str) -> bool:
    """Is the occurrence of `name` at column `col` the line that defines it (def / class / `name =`)?"""
    before = line[:col]
    if re.search(r"\b(def|class)\s+$", before):
        return True
    after = line[col + len(name):]
    return not before.strip() and re.match(r"\s*(:[^=]*)?=(?!=)", after) is not None


def _candidates(path: str, text: str, tokenizer: Any, repo_idents: set[str] | frozenset[str], *,
                max_prefix_tokens: int, mode: str, seed: int) -> list[tuple[tuple, Cut]]:
    if mode not in CUT_MODES:
        raise ValueError(f"mode must be one of {CUT_MODES}, not {mode!r}")
    ids, offsets = tokenize(tokenizer, text)
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    out: list[tuple[tuple, Cut]] = []
    ln, tok_lo = 0, 0
    for m in IDENT_RE.finditer(text):
        name, s, e = m.group(), m.start(), m.end()
        if name not in repo_idents or (s > 0 and (text[s - 1].isalnum() or text[s - 1] == "_")):
            continue
        while ln + 1 < len(line_starts) and line_starts[ln + 1] <= s:
            ln += 1
        line_end = text.find("\n", s)
        line = text[line_starts[ln]: line_end if line_end >= 0 else len(text)]
        if line.lstrip().startswith("#") or _is_definition(line, s - line_starts[ln], name):
            continue
        i = _token_at(offsets, s, tok_lo)
        if i is None:
            break
        tok_lo = i
        ts, te = offsets[i]
        if ts > s or text[ts:s].strip():  # the identifier does not start this token: no clean cut here
            continue
        if i < MIN_PREFIX_TOKENS:
            continue
        start = max(0, i - max_prefix_tokens)
        window = text[offsets[start][0]: s]
        partial = ""
        end_tok = i
        if mode == "inside":
            if te >= e:  # a one-token identifier has no inside
                continue
            partial, end_tok = text[s:te], i + 1
        prefix_ids = ids[start:end_tok]
        cut = Cut(path, prefix_ids, tokenizer.decode(prefix_ids), name, name in words(window), mode, partial, ln + 1)
        out.append(((stable_hash(seed, "cut", path, name), stable_hash(seed, "occ", path, s)), cut))
    return out


def _select(cands: list[tuple[tuple, Cut]], n: int, seed: int, unseen_share: float) -> list[Cut]:
    """n cuts: round-robin over identifiers (by a seeded order), `unseen_share` of them not in the prompt window."""
    def spread(pool: list[tuple[tuple, Cut]]) -> list[Cut]:
        by_name: dict[tuple[str, str], list[tuple[tuple, Cut]]] = {}
        for key, cut in pool:
            by_name.setdefault((cut.path, cut.target), []).append((key, cut))
        rows = []
        for group in by_name.values():
            group.sort(key=lambda kc: kc[0][1])
            rows += [((k, kc[0][0]), kc[1]) for k, kc in enumerate(group)]
        return [c for _, c in sorted(rows, key=lambda r: r[0])]

    unseen = spread([c for c in cands if not c[1].in_prompt])
    seen = spread([c for c in cands if c[1].in_prompt])
    n_unseen = min(len(unseen), max(n - len(seen), round(n * unseen_share)))
    chosen = unseen[:n_unseen] + seen[: n - n_unseen]
    return sorted(chosen, key=lambda c: (c.path, c.line, len(c.prefix_ids)))


def identifier_cuts(path: str, text: str, tokenizer: Any, repo_idents: set[str] | frozenset[str], *, n: int,
                    seed: int = 0, max_prefix_tokens: int = 384, mode: str = "boundary",
                    unseen_share: float = 0.75) -> list[Cut]:
    """Up to `n` cut points in one file, each right before a use (never the defining line, never a comment line) of
    a repository-defined identifier, at a token boundary: "boundary" ends the prompt at the token where the
    identifier starts (occurrences where a token straddles the identifier's start are skipped), "inside" ends it
    after the identifier's first token (one-token identifiers are skipped). The prompt keeps at most
    `max_prefix_tokens` tokens of the file before the cut. Selection is seeded and stable (sha256, not hash()):
    a round-robin over identifiers, with `unseen_share` of the cuts on identifiers absent from the prompt window
    (the names a prompt does not show) and the rest on ones it shows; `Cut.in_prompt` tells them apart.
    """
    cands = _candidates(path, text, tokenizer, repo_idents, max_prefix_tokens=max_prefix_tokens, mode=mode, seed=seed)
    return _select(cands, n, seed, unseen_share)


def repo_cuts(files: Mapping[str, str], tokenizer: Any, repo_idents: set[str] | frozenset[str], *, n: int,
              seed: int = 0, max_prefix_tokens: int = 384, mode: str = "boundary",
              unseen_share: float = 0.75) -> list[Cut]:
    """`identifier_cuts` over several files at once: n cuts in all, drawn from every file's candidates."""
    cands: list[tuple[tuple, Cut]] = []
    for path in sorted(files):
        cands += _candidates(path, files[path], tokenizer, repo_idents, max_prefix_tokens=max_prefix_tokens,
                             mode=mode, seed=seed)
    return _select(cands, n, seed, unseen_share)


def _line_candidates(path: str, text: str, tokenizer: Any, *, max_prefix_tokens: int, max_target_tokens: int,
                     seed: int) -> list[tuple[int, LineCase]]:
    ids, offsets = tokenize(tokenizer, text)
    out: list[tuple[int, LineCase]] = []
    pos, tok_lo = 0, 0
    for ln, line in enumerate(text.splitlines(keepends=True)):
        body = line.strip()
        start = pos + len(line) - len(line.lstrip())
        pos += len(line)
        if ln < 3 or not 6 <= len(body) <= 100 or body.startswith(("#", '"', "'", "@")):
            continue
        i = _token_at(offsets, start, tok_lo)
        if i is None:
            break
        tok_lo = i
        if offsets[i][0] > start or text[offsets[i][0]: start].strip() or i < MIN_PREFIX_TOKENS:
            continue  # no token boundary before the line's first character
        j = _token_at(offsets, start + len(body) - 1, i)
        if j is None or j - i + 1 > max_target_tokens:
            continue
        prefix_ids = ids[max(0, i - max_prefix_tokens): i]
        case = LineCase(path, prefix_ids, tokenizer.decode(prefix_ids), body, ln + 1)
        out.append((stable_hash(seed, "line", path, ln), case))
    return out


def line_cases(path: str, text: str, tokenizer: Any, *, n: int, seed: int = 0, max_prefix_tokens: int = 96,
               max_target_tokens: int = 24) -> list[LineCase]:
    """Up to `n` next-line cases in one file: the prompt is the file up to a line's first non-blank character
    (at a token boundary; the tokens before it, at most `max_prefix_tokens`), the target the stripped line
    (6-100 characters, not a comment, docstring quote or decorator, at most `max_target_tokens` tokens).
    Chosen by a seeded stable hash.
    """
    return repo_line_cases({path: text}, tokenizer, n=n, seed=seed, max_prefix_tokens=max_prefix_tokens,
                           max_target_tokens=max_target_tokens)


def repo_line_cases(files: Mapping[str, str], tokenizer: Any, *, n: int, seed: int = 0, max_prefix_tokens: int = 96,
                    max_target_tokens: int = 24) -> list[LineCase]:
    """`line_cases` over several files: n cases in all."""
    cands: list[tuple[int, LineCase]] = []
    for path in sorted(files):
        cands += _line_candidates(path, files[path], tokenizer, max_prefix_tokens=max_prefix_tokens,
                                  max_target_tokens=max_target_tokens, seed=seed)
    chosen = [c for _, c in sorted(cands, key=lambda kc: kc[0])[:n]]
    return sorted(chosen, key=lambda c: (c.path, c.line))


def text_chunks(files: Mapping[str, str], tokenizer: Any, repo_idents: set[str] | frozenset[str], *, n: int,
                seq_len: int = 128, seed: int = 0) -> list[Chunk]:
    """Up to `n` windows of `seq_len` tokens (shorter only for a file shorter than that) from the files, ranked
    like the training corpus: windows with more repository-identifier tokens first (up to 8), ties by seeded hash.
    """
    cands: list[tuple[tuple[int, int], Chunk]] = []
    for path in sorted(files):
        text = files[path]
        ids, offsets = tokenize(tokenizer, text)
        if len(ids) < 2:
            continue
        marks = mark_tokens(offsets, identifier_spans(text, repo_idents))
        for start in range(0, max(len(ids) - seq_len // 2, 1), seq_len):
            if start + seq_len > len(ids):
                start = max(0, len(ids) - seq_len)
            chunk = Chunk(path, ids[start: start + seq_len], marks[start: start + seq_len], start)
            cands.append(((-min(sum(chunk.ident[1:]), 8), stable_hash(seed, "chunk", path, start)), chunk))
    return [c for _, c in sorted(cands, key=lambda kc: kc[0])[:n]]
