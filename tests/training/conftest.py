"""Tiny random-init Llama, a byte-level tokenizer, and toy repositories built through the real corpus code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


from tests.hypernet.conftest import _byte_tokenizer as byte_tokenizer
from tests.hypernet.conftest import tiny_llama as _tiny_llama


def tiny_llama(seed: int = 0):
    """The shared tiny Llama, frozen and without a KV cache (training reads full sequences)."""
    model = _tiny_llama(seed).requires_grad_(False)
    model.config.use_cache = False
    return model


TOY = {
    "inventory": ["restock_shelf", "ShelfLabel", "barcode_digits", "warehouse_bin"],
    "astronomy": ["orbit_period", "StarChart", "parallax_arcsec", "nebula_catalog"],
    "brewing": ["mash_temperature", "HopSchedule", "gravity_reading", "fermenter_volume"],
    "railways": ["signal_block", "TimetableRow", "platform_clearance", "junction_route"],
}


def tiny_hypernet(repos: list, tokenizer):
    """(tiny model, a small top-layer hypernet whose B head is non-zero, the repos' encoded contexts)."""
    from hypernet.model import HypernetArch
    from training.hypernet.config import TrainConfig
    from training.hypernet.run import encode_repos
    from training.hypernet.train import build_hypernet

    model = tiny_llama()
    cfg = TrainConfig(adapt_layers=1, hypernet=HypernetArch(rank=4, d_model=32, n_atoms=8))
    net = build_hypernet(cfg, model).eval()
    torch.nn.init.normal_(net.head_b.weight, std=0.05)  # untrained B = 0 would make every adapter a no-op
    feats = encode_repos(repos, use_sentence=False, use_tokens=True, tokenizer=tokenizer,
                         embeddings=model.get_input_embeddings().weight.detach())
    return model, net, feats


def write_toy_repo(root: Path, words: list[str], n_files: int = 6) -> Path:
    """A small Python package whose files define and use its own identifiers, with a test file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "__init__.py").write_text("")
    fn, cls, a, b = words
    for i in range(n_files):
        (root / f"mod{i}.py").write_text(
            f"class {cls}{i}:\n    def {fn}_{i}(self, {a}, {b}):\n        return {a} + {b}\n\n"
            f"def {fn}(x):\n    {a} = x * {i}\n    {b} = {cls}{i}().{fn}_{i}({a}, x)\n    return {b}\n\n"
            f"def use_{i}():\n    return {fn}({a}_{i}) + {fn}({b}_{i})\n\n{a.upper()}_{i} = {i}\n"
        )
    (root / "test_things.py").write_text(
        f"from mod0 import {fn}\n\ndef test_{fn}():\n    assert {fn}(2) == 0\n    assert {fn}(0) == 0\n"
    )
    return root


@pytest.fixture(scope="session")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture(scope="session")
def toy_repos(tmp_path_factory, tokenizer):
    """RepoData for four toy repositories (three train, one val), via `build_repo`."""
    from training.data.corpus import CorpusConfig, build_repo
    from training.data.sources import RepoSource, python_files

    base = tmp_path_factory.mktemp("toy")
    cfg = CorpusConfig(seq_len=48, chunks_per_repo=3, min_identifiers=2, min_ident_tokens=1, target_frac=0.4,
                       context_budget=200, prefix_tokens=40, max_target_tokens=40)
    repos = []
    for i, (name, words) in enumerate(TOY.items()):
        root = write_toy_repo(base / name, words)
        files = {p: (root / p).read_bytes() for p in python_files(root, 100_000)}
        repo = build_repo(RepoSource(name, str(root), "git"), files, tokenizer, cfg)
        assert repo is not None, name
        repo.split = "val" if i == 3 else "train"
        repos.append(repo)
    return repos
