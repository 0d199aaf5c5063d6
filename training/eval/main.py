"""`evaluate_checkpoint`: load everything a checkpoint was trained with, run every arm, write the report."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from training.eval.run import EvalOptions, Evaluator

log = logging.getLogger(__name__)


def select_repos(args: list[str], corpus: list, cfg: Any, tokenizer: Any) -> list:
    """Split names (test/val/train), corpus repository names, or paths to repositories (built on the fly)."""
    from training.data.corpus import build_repo
    from training.data.sources import RepoSource, python_files

    by_name = {r.name: r for r in corpus}
    out = []
    for arg in args:
        if arg in ("test", "val", "train"):
            out += [r for r in corpus if r.split == arg]
        elif arg in by_name:
            out.append(by_name[arg])
        elif Path(arg).is_dir():
            root = Path(arg).resolve()
            files = {p: (root / p).read_bytes() for p in python_files(root, cfg.corpus.max_file_bytes)[: cfg.corpus.max_files]}
            repo = build_repo(RepoSource(f"git/{root.name}", str(root), "git"), files, tokenizer, cfg.corpus,
                              n_chunks=cfg.corpus.eval_chunks_per_repo)
            if repo is None:
                raise ValueError(f"{arg}: too small to evaluate (needs context and target files with identifiers)")
            repo.split = "path"
            out.append(repo)
        else:
            raise ValueError(f"unknown repository {arg!r}: use test/val/train, a corpus name, or a path")
    seen, unique = set(), []
    for r in out:
        if r.name not in seen:
            seen.add(r.name)
            unique.append(r)
    return unique


class NoRepositories(ValueError):
    """The run selected no repository to evaluate."""


def evaluate_checkpoint(checkpoint: Path, opts: EvalOptions, out_dir: Path, shared_lora: Path | None = None,
                        config: Path | None = None) -> dict[str, Any]:
    """Run the evaluation; returns the report dict (also written to out_dir)."""
    from hypernet.adapter import read_adapter, scaling
    from hypernet.basemodel import load_base_model, load_tokenizer
    from hypernet.checkpoint import load_checkpoint
    from training.data.corpus import build_corpus
    from training.eval.report import build_report, write_report
    from training.hypernet.config import load_config
    from training.hypernet.run import encode_repos

    t_start = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(opts.threads)
    checkpoint = Path(checkpoint)
    cfg = load_config(config or checkpoint.parent / "train_config.json")
    tokenizer = load_tokenizer(cfg.base_model)
    model = load_base_model(cfg.base_model)
    model.config.use_cache = False
    # repositories given only as paths are built on the fly: no need to build (or load) the whole corpus
    only_paths = all(r not in ("test", "val", "train") and Path(r).is_dir() for r in opts.repos)
    corpus = [] if only_paths else build_corpus(cfg.corpus, tokenizer, cache_dir=cfg.work_path, progress=False)
    repos = select_repos(opts.repos, corpus, cfg, tokenizer)
    if opts.max_repos:
        repos = repos[: opts.max_repos]
    if not repos:
        raise NoRepositories(f"no repository matches --repos {' '.join(opts.repos)}: is the corpus materialised "
                             "(python -m training.data.public materialize)?")
    net = load_checkpoint(checkpoint)
    hn = net.config
    embeddings = model.get_input_embeddings().weight.detach().float()
    if hn.use_sentence:  # load once, outside the timing (a server holds it resident)
        from hypernet.encoder import SentenceEncoder

        SentenceEncoder.load()
    t0 = time.perf_counter()
    # The checkpoint reads as many context tokens as it was trained with (the service does the same), even when
    # the corpus was rendered with a larger budget for another checkpoint (renders put the most important first).
    budget = min(cfg.corpus.context_budget, int(hn.extra.get("token_budget", cfg.corpus.context_budget)))
    feats = encode_repos(repos, use_sentence=hn.use_sentence, use_tokens=hn.use_tokens, tokenizer=tokenizer,
                         embeddings=embeddings, cache=None, max_tokens=budget, model=model,
                         token_source=hn.token_source, token_layers=hn.token_layers, token_chunk=hn.token_chunk)
    encode_ms = (time.perf_counter() - t0) * 1e3 / max(1, len(repos))
    shared = None
    if shared_lora is not None:
        acfg, tensors = read_adapter(Path(shared_lora))
        shared = (tensors, scaling(acfg))
    ev = Evaluator(model, tokenizer, net, repos, feats, opts, shared_lora=shared, cache_dir=cfg.work_path,
                   train_cfg=cfg)
    raw = ev.run()
    raw["timings"]["encode_ms"] = [encode_ms]
    meta = {"checkpoint": str(checkpoint), "shared_lora": str(shared_lora) if shared_lora else None,
            "options": opts.__dict__, "train_config": cfg.name, "adapt_layers": cfg.adapt_layers,
            "wall_s": round(time.perf_counter() - t_start, 1), "threads": opts.threads}
    report = build_report(raw, tokenizer, n_boot=opts.bootstrap, seed=opts.seed, meta=meta,
                          side_by_side=opts.side_by_side)
    write_report(report, Path(out_dir))
    return report
