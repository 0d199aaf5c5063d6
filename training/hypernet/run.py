"""`train_from_config`: base model + corpus + encoded contexts (cached) -> Trainer.run()."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from hypernet.encoder import EncodedContext
from training.data.corpus import RepoData, build_corpus
from training.hypernet.config import TrainConfig
from training.hypernet.train import Trainer

log = logging.getLogger(__name__)


def encode_repos(repos: list[RepoData], *, use_sentence: bool, use_tokens: bool, tokenizer: Any,
                 embeddings: torch.Tensor | None, cache: Path | None = None, max_tokens: int = 2048,
                 model: Any = None, token_source: str = "embeddings", token_layers: int = 0,
                 token_chunk: int = 0, progress: bool = False) -> list[EncodedContext]:
    """Per repository: pooled sentence vectors of its context items and/or the base model's token vectors of its
    rendered API text (input embeddings, or hidden states of the first `token_layers` layers read in chunks).
    The encoders are frozen, so this runs once and is cached (token vectors as bf16: half the memory)."""
    from tqdm import tqdm

    from hypernet.encoder import ContextEncoder, SentenceEncoder, TokenEncoder

    tag: list[Any] = [use_sentence, use_tokens, max_tokens]
    if token_source != "embeddings":
        tag += [token_source, token_layers, token_chunk]
    key = hashlib.sha256(json.dumps([[r.name, r.digest, len(r.render_text), len(r.items)] for r in repos]
                                    + tag).encode()).hexdigest()[:16]
    path = Path(cache) / f"features-{key}.pt" if cache else None
    if path is not None and path.is_file():
        data = torch.load(path)
        return [EncodedContext(p, t) for p, t in zip(data["pooled"], data["tokens"], strict=False)]
    sentence = SentenceEncoder.load() if use_sentence else None
    tokens = None
    if use_tokens:
        tokens = TokenEncoder(tokenizer, embeddings=embeddings, model=model, source=token_source,
                              max_tokens=max_tokens, layers=token_layers, chunk=token_chunk)
    enc = ContextEncoder(sentence, tokens)
    t0 = time.perf_counter()
    out = []
    for r in tqdm(repos, desc="encode contexts", disable=not progress):
        e = enc.encode(items=r.items, api_text=r.render_text)
        if e.tokens is not None and token_source != "embeddings":
            e = EncodedContext(e.pooled, e.tokens.to(torch.bfloat16))
        out.append(e)
    log.info("encoded %d repository contexts in %.1fs", len(repos), time.perf_counter() - t0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"pooled": [e.pooled for e in out], "tokens": [e.tokens for e in out]}, path)
    return out


def add_context_chunks(repos: list[RepoData], tokenizer: Any, cfg: TrainConfig) -> int:
    """Give each training repository up to `cfg.context_chunks_per_repo` chunks of its own *context* files
    (kind "context"): the adapter is asked to reproduce the identifiers of the very files it was written from,
    beside predicting them in held-out files. Deterministic; returns the number of chunks added."""
    from training.data.corpus import _chunks
    from training.data.sources import stable_hash

    if cfg.context_chunks_per_repo <= 0:
        return 0
    added = 0
    for r in repos:
        if r.split != "train" or any(c.kind == "context" for c in r.chunks):
            continue
        ident = set(r.identifiers)
        found = []
        for rel, text in sorted(r.context_texts().items()):
            for seq in _chunks(rel, text, tokenizer, ident, cfg.corpus):
                seq.kind = "context"
                found.append(seq)
        found.sort(key=lambda q: (-min(q.n_ident(), 8), stable_hash(str(cfg.seed), r.name, q.file, str(q.ids[:4]))))
        r.chunks.extend(found[: cfg.context_chunks_per_repo])
        added += len(found[: cfg.context_chunks_per_repo])
    return added


def load_everything(cfg: TrainConfig) -> tuple[Any, Any, list[RepoData], list[EncodedContext]]:
    """(model, tokenizer, repos, features) for a config."""
    from hypernet.basemodel import load_base_model, load_tokenizer

    torch.set_num_threads(cfg.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = load_tokenizer(cfg.base_model)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {cfg.device!r} asked for, but torch sees no CUDA device")
    model = load_base_model(cfg.base_model, device=cfg.device)
    model.config.use_cache = False
    repos = build_corpus(cfg.corpus, tokenizer, cache_dir=cfg.work_path, progress=cfg.progress)
    if cfg.train_chunks_per_repo > 0:
        for r in repos:
            if r.split == "train":
                r.chunks = [c for c in r.chunks if c.kind != "context"][: cfg.train_chunks_per_repo]
    n_ctx = add_context_chunks(repos, tokenizer, cfg)
    if n_ctx:
        log.info("context-reproduction chunks: %d", n_ctx)
    hn = cfg.hypernet
    if cfg.arm != "hypernet":  # the shared LoRA reads no context
        return model, tokenizer, repos, [None] * len(repos)
    feats = encode_repos(repos, use_sentence=hn.use_sentence, use_tokens=hn.use_tokens, tokenizer=tokenizer,
                         embeddings=model.get_input_embeddings().weight.detach().float(),
                         cache=cfg.work_path, max_tokens=cfg.corpus.context_budget, model=model,
                         token_source=hn.token_source, token_layers=hn.token_layers,
                         token_chunk=hn.token_chunk, progress=cfg.progress)
    return model, tokenizer, repos, feats


def train_from_config(cfg: TrainConfig, resume: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Prepare and train; returns the last logged record."""
    t0 = time.perf_counter()
    model, _tok, repos, feats = load_everything(cfg)
    counts = {s: sum(r.split == s for r in repos) for s in ("train", "val", "test")}
    log.info("corpus: %s repositories; prepared in %.1fs", counts, time.perf_counter() - t0)
    key = hashlib.sha256((cfg.corpus.key() + str(cfg.base_model)).encode()).hexdigest()[:16]
    trainer = Trainer(cfg, model, repos, feats, cache_key=key)
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out_dir) / "splits.json").write_text(json.dumps(
        {s: [r.name for r in repos if r.split == s] for s in ("train", "val", "test")}, indent=1) + "\n")
    last = trainer.run(resume=resume, stop_after=stop_after)
    last["wall_s"] = round(time.perf_counter() - t0, 1)
    return last
