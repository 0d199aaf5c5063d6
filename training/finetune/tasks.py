"""Prompts, reference continuations, the teacher's context and held-out text for a run.

The repository recipe (context distillation): the repository's files are split by the corpus code of
`training.data` into context files and held-out target files. Training prompts are cut at line starts of the
context files; the teacher sees the rendered API of the context files before each prompt; held-out next-token
loss is measured on chunks of the target files (the same chunks the eval harness of `training.data` builds).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.finetune.config import TaskConfig

CONTEXT_HEADER = "# Repository API (context)\n"


@dataclass
class Prompt:
    """A student prompt (token ids), its true continuation (ids and text), and the file it comes from."""

    ids: list[int]
    reference: list[int]
    reference_text: str
    source: str


@dataclass
class TaskData:
    """What a run trains and evaluates on."""

    name: str
    prompts: list[Prompt]
    context_ids: list[int]
    eval_chunks: list[list[int]]
    eval_ident: list[list[bool]] = field(default_factory=list)
    context_text: str = ""  # the full text `context_ids` was cut from (another budget: `context_ids(tok, text, n)`)
    info: dict[str, Any] = field(default_factory=dict)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def line_prompts(files: dict[str, str], tokenizer: Any, cfg: TaskConfig) -> list[Prompt]:
    """Up to `n_prompts` prompts: a file header plus the last `prompt_tokens` tokens before the start of a
    non-blank, non-comment line, and the next `completion_tokens` tokens as reference; seeded sample over all files.

    Prompts are cut between tokens of the file's own tokenization. Cutting the text at a newline and tokenizing
    the halves apart would end every prompt in a lone newline token, where BPE tokenizers merge the newline with
    the next line's indentation: the model would then expect a line at column 0, and its samples drift off-text.
    """
    cuts, encoded = [], {}
    for rel in sorted(files):
        text = files[rel]
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        encoded[rel] = ids
        for i in range(1, len(ids)):
            piece = text[offsets[i - 1][0]: offsets[i - 1][1]]
            nl = piece.rfind("\n")
            if nl < 0 or piece[nl + 1:].strip():  # token i-1 must end a line (newline + indentation only)
                continue
            line_start = offsets[i - 1][0] + nl + 1
            line_end = text.find("\n", line_start)
            body = text[line_start: line_end if line_end >= 0 else len(text)].strip()
            if len(body) >= 4 and not body.startswith("#"):
                cuts.append((rel, i))
    random.Random(cfg.seed).shuffle(cuts)
    out = []
    for rel, i in cuts:
        ids = encoded[rel]
        before, after = ids[max(0, i - cfg.prompt_tokens): i], ids[i: i + cfg.completion_tokens]
        if len(after) < cfg.completion_tokens or len(before) < 8:
            continue
        out.append(Prompt(_ids(tokenizer, f"# file: {rel}\n") + before, after, tokenizer.decode(after), rel))
        if len(out) >= cfg.n_prompts:
            break
    return out


def context_ids(tokenizer: Any, text: str, budget: int) -> list[int]:
    """The teacher's prefix: header + the first `budget` tokens of the context text + a blank line."""
    if not text:
        return []
    return _ids(tokenizer, CONTEXT_HEADER) + _ids(tokenizer, text)[:budget] + _ids(tokenizer, "\n\n")


def text_chunks(texts: list[str], tokenizer: Any, seq_len: int, limit: int) -> list[list[int]]:
    """Consecutive `seq_len`-token windows of the texts (a shorter text gives one shorter window)."""
    out = []
    for text in texts:
        ids = _ids(tokenizer, text)
        for s in range(0, max(len(ids) - 1, 1), seq_len):
            if len(ids[s: s + seq_len]) >= 2:
                out.append(ids[s: s + seq_len])
    return out[:limit]


def texts_task(cfg: TaskConfig, tokenizer: Any, context_budget: int) -> TaskData:
    """A task from given texts (tests, toy tasks): prompts from `texts`, held-out chunks from `eval_texts`."""
    files = {f"text{i}.py": t for i, t in enumerate(cfg.texts)}
    return TaskData("texts", line_prompts(files, tokenizer, cfg), context_ids(tokenizer, cfg.context_text,
                    context_budget), text_chunks(cfg.eval_texts or cfg.texts, tokenizer, cfg.seq_len, cfg.eval_chunks),
                    context_text=cfg.context_text)


def repo_task(cfg: TaskConfig, tokenizer: Any, context_budget: int) -> TaskData:
    """The repository recipe: context/target split, rendered API of the context files, held-out target chunks."""
    from training.data.corpus import CorpusConfig, build_repo, sample_files
    from training.data.sources import RepoSource

    root = Path(cfg.repo or "").expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"task.repo is not a folder: {root}")
    ccfg = CorpusConfig(seq_len=cfg.seq_len, eval_chunks_per_repo=cfg.eval_chunks, context_budget=context_budget,
                        seed=cfg.seed, min_identifiers=2, min_ident_tokens=1)
    src = RepoSource(root.name, str(root), "git")
    files = {rel: (root / rel).read_bytes() for rel in sample_files(src, ccfg)}
    repo = build_repo(src, files, tokenizer, ccfg, n_chunks=cfg.eval_chunks)
    if repo is None:
        raise ValueError(f"{root}: too small for the corpus builder (needs context and target files)")
    ctx_files = {rel: files[rel].decode("utf-8", "replace") for rel in repo.context_files}
    return TaskData(
        name=root.name, prompts=line_prompts(ctx_files, tokenizer, cfg),
        context_ids=context_ids(tokenizer, repo.render_text, context_budget), context_text=repo.render_text,
        eval_chunks=[c.ids for c in repo.chunks], eval_ident=[c.ident for c in repo.chunks],
        info={"context_files": repo.context_files, "target_files": repo.target_files,
              "identifiers": len(repo.identifiers)})


def corpus_task(cfg: TaskConfig, tokenizer: Any, context_budget: int) -> TaskData:
    """A repository of the hypernet's training corpus by name: the same context files, rendered context and
    held-out chunks as `code2lora eval`, so a fine-tuned adapter is measured on what its starting adapter was."""
    from training.data.corpus import build_corpus
    from training.hypernet.config import load_config

    if not cfg.train_config or not cfg.repo:
        raise ValueError("task kind 'corpus' needs task.train_config (a hypernet training config) and task.repo "
                         "(a corpus repository name)")
    tcfg = load_config(cfg.train_config)
    corpus = build_corpus(tcfg.corpus, tokenizer, cache_dir=tcfg.work_path, progress=False)
    by_name = {r.name: r for r in corpus}
    if cfg.repo not in by_name:
        raise ValueError(f"{cfg.repo!r} is not in the corpus of {cfg.train_config} (e.g. {sorted(by_name)[:3]})")
    repo = by_name[cfg.repo]
    ctx_files = repo.context_texts()
    chunks = repo.chunks[: cfg.eval_chunks] if cfg.eval_chunks else repo.chunks
    return TaskData(
        name=repo.name, prompts=line_prompts(ctx_files, tokenizer, cfg),
        context_ids=context_ids(tokenizer, repo.render_text, context_budget), context_text=repo.render_text,
        eval_chunks=[c.ids for c in chunks], eval_ident=[c.ident for c in chunks],
        info={"context_files": repo.context_files, "target_files": repo.target_files,
              "identifiers": len(repo.identifiers), "split": repo.split})


def build_task(cfg: TaskConfig, tokenizer: Any, context_budget: int) -> TaskData:
    """TaskData for the configured kind."""
    if cfg.kind == "repo":
        return repo_task(cfg, tokenizer, context_budget)
    if cfg.kind == "corpus":
        return corpus_task(cfg, tokenizer, context_budget)
    if cfg.kind == "texts":
        return texts_task(cfg, tokenizer, context_budget)
    raise ValueError(f"unknown task kind {cfg.kind!r}")
