"""Evolving mode for a hypernetwork that reads hidden states: the recurrence runs over API lines, in order."""

from __future__ import annotations

from pathlib import Path

import torch

from hypernet.adapter import read_adapter
from hypernet.evolve import EvolvingState, fold, generate_from_state, initial_state, reads_hidden
from hypernet.generator import AdapterGenerator

from .conftest import FakeContext

V2 = {"token_source": "hidden_embed", "token_layers": 1, "token_chunk": 32}


def _generator(tiny_model_dir: Path) -> AdapterGenerator:
    gen = AdapterGenerator.load(None, tiny_model_dir, init_overrides=V2)
    torch.manual_seed(3)
    with torch.no_grad():
        gen.hypernet.head_b.weight.normal_(0.0, 0.5)  # an untrained B head writes no-op adapters
    return gen


def test_line_state_folds_and_generates(tiny_model_dir: Path, tmp_path: Path) -> None:
    gen = _generator(tiny_model_dir)
    assert reads_hidden(gen)
    ctx = FakeContext(["parse_invoice", "InvoiceLine", "total_with_vat"])
    s0 = initial_state(ctx, gen, "c0")
    assert s0.weights == {} and list(s0.lines) == ctx.render().splitlines()
    added = "def ship_order(order, carrier): ...  # ship_order ships it"
    removed = ctx.render().splitlines()[0]
    s1 = fold(s0, gen, added, removed, "c1")
    assert next(iter(s1.lines)) == added  # the new API line weighs most, so it is read first
    assert removed not in s1.lines and s1.steps == 1  # 0.8 - 1 < 0: a removed API line fades out and s1.history == ["c0", "c1"]
    again = EvolvingState.from_json(s1.to_json())
    assert again.lines == s1.lines and again.digest == s1.digest and s1.digest != s0.digest
    a0 = generate_from_state(s0, gen, tmp_path / "a0")
    a1 = generate_from_state(s1, gen, tmp_path / "a1")
    assert a0.sha256 != a1.sha256
    _, t0 = read_adapter(a0.path)
    _, t1 = read_adapter(a1.path)
    assert any(not torch.allclose(t0[k][1], t1[k][1]) for k in t0)
    assert generate_from_state(s1, gen, tmp_path / "a1b").sha256 == a1.sha256  # deterministic
