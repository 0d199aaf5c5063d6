"""Functional LoRA application: matches a merged weight, carries gradients, supports one adapter per sample."""

from __future__ import annotations

import torch

from hypernet.basemodel import find_targets
from hypernet.encoder import EncodedContext, collate
from hypernet.lora_apply import applied_lora
from hypernet.model import Code2LoRAHypernet, HypernetConfig

from .conftest import tiny_llama


def _hypernet(model, **overrides) -> Code2LoRAHypernet:
    torch.manual_seed(0)
    overrides = {"use_sentence": True, **overrides}  # both context paths unless a test says otherwise
    config = HypernetConfig.for_base(model.config, find_targets(model), d_model=32, n_atoms=8, **overrides)
    return Code2LoRAHypernet(config)


def _contexts(n: int, hidden: int = 64) -> list[EncodedContext]:
    g = torch.Generator().manual_seed(3)
    return [EncodedContext(torch.randn(768, generator=g), torch.randn(5 + 3 * i, hidden, generator=g)) for i in range(n)]


def test_hooked_forward_equals_merged_weights():
    model = tiny_llama()
    ids = torch.randint(0, 256, (1, 12))
    path = "model.layers.0.mlp.up_proj"
    a, b = torch.randn(4, 64) * 0.1, torch.randn(128, 4) * 0.1
    with torch.no_grad(), applied_lora(model, {path: (a, b)}, scaling=2.0):
        hooked = model(input_ids=ids).logits
    merged = tiny_llama()
    with torch.no_grad():
        merged.get_submodule(path).weight += 2.0 * b @ a
        expected = merged(input_ids=ids).logits
    torch.testing.assert_close(hooked, expected, rtol=1e-4, atol=1e-5)


def test_gradients_flow_into_the_hypernet_from_zero_b():
    model = tiny_llama().requires_grad_(False)
    hn = _hypernet(model)
    pooled, tokens, mask = collate(_contexts(1))
    ids = torch.randint(0, 256, (1, 10))
    with applied_lora(model, hn(pooled, tokens, mask), hn.config.scaling):
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:])
    loss.backward()
    assert hn.head_b.weight.grad is not None and hn.head_b.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())  # the base model stays frozen


def test_batched_generation_matches_one_by_one_and_applies_per_sample():
    model = tiny_llama()
    hn = _hypernet(model)
    torch.nn.init.normal_(hn.head_b.weight, std=0.5)
    contexts = _contexts(2)
    with torch.no_grad():
        batched = hn(*collate(contexts))
        singles = [hn.generate(c.pooled, c.tokens) for c in contexts]
    for path, (a, b) in batched.items():
        for i, single in enumerate(singles):
            torch.testing.assert_close(a[i], single[path][0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(b[i], single[path][1], rtol=1e-5, atol=1e-6)
    ids = torch.randint(0, 256, (2, 8))
    with torch.no_grad():
        with applied_lora(model, batched, hn.config.scaling):
            both = model(input_ids=ids).logits
        with applied_lora(model, singles[1], hn.config.scaling):
            second = model(input_ids=ids[1:]).logits
    torch.testing.assert_close(both[1:], second, rtol=1e-4, atol=1e-5)


def test_sentence_only_and_token_only_hypernets_generate():
    model = tiny_llama()
    ctx = _contexts(1)[0]
    only_sentence = _hypernet(model, use_tokens=False).generate(pooled=ctx.pooled)
    only_tokens = _hypernet(model, use_sentence=False).generate(tokens=ctx.tokens)
    assert only_sentence.keys() == only_tokens.keys()
    assert len(only_sentence) == 14


def test_generated_values_are_bounded():
    model = tiny_llama()
    hn = _hypernet(model)
    torch.nn.init.normal_(hn.head_a.weight, std=50.0)
    torch.nn.init.normal_(hn.head_b.weight, std=50.0)
    ctx = _contexts(1)[0]
    for a, b in hn.generate(ctx.pooled, ctx.tokens).values():
        assert a.abs().max() <= hn.config.bound and b.abs().max() <= hn.config.bound
