"""Refinement's window sampling (uniform, or weighted by identifier tokens) and learning-rate schedule (issue 18)."""

from __future__ import annotations

import torch

from hypernet.refine import _Cycle


def test_a_weighted_cycle_draws_heavy_windows_first_and_still_visits_every_window_once_a_pass() -> None:
    weights = torch.tensor([1.0] * 8 + [1e6, 1e6])
    cycle = _Cycle(10, torch.Generator().manual_seed(0), weights)
    assert set(cycle.take(2)) == {8, 9}
    assert sorted(cycle.take(2) + cycle.take(6)) == list(range(8))  # the rest of the pass
    assert len(set(cycle.take(10))) == 10  # a new pass, again a permutation


def test_an_unweighted_cycle_is_the_seeded_shuffle() -> None:
    a = _Cycle(7, torch.Generator().manual_seed(3))
    b = _Cycle(7, torch.Generator().manual_seed(3))
    assert a.take(14) == b.take(14)
    assert sorted(_Cycle(7, torch.Generator().manual_seed(3)).take(7)) == list(range(7))


def test_refinement_with_identifier_sampling_is_deterministic_and_trains_on_other_windows() -> None:
    from hypernet.refine import RefineConfig, refine_adapter
    from testkit.models import byte_tokenizer, tiny_llama
    from tests.hypernet.test_refine_rl import FILES, REPO_IDENTS, _start

    model, tok = tiny_llama(seed=3).requires_grad_(False), byte_tokenizer()
    start = _start(model)

    def run(weighted: bool) -> dict:
        cfg = RefineConfig(steps=3, max_seconds=600, seq_len=32, batch=2, eval_every=10, val_fraction=0.0,
                           sample_by_identifiers=weighted)
        return refine_adapter(model, tok, start, 2.0, FILES, REPO_IDENTS, cfg).tensors

    a, b, plain = run(True), run(True), run(False)
    assert all(torch.equal(a[p][1], b[p][1]) for p in a)
    assert any(not torch.equal(a[p][1], start[p][1]) for p in a)  # it trained
    assert any(not torch.equal(a[p][1], plain[p][1]) for p in a)  # on other windows than the uniform shuffle


def test_the_learning_rate_is_constant_or_decays_by_a_cosine_to_a_tenth() -> None:
    import pytest

    from hypernet.refine import RefineConfig, _lr_at

    flat = RefineConfig(lr=1e-3, steps=5)
    assert [_lr_at(flat, s) for s in range(1, 6)] == [1e-3] * 5
    cos = RefineConfig(lr=1e-3, steps=5, lr_decay=True)
    rates = [_lr_at(cos, s) for s in range(1, 6)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-4)
    assert rates[2] == pytest.approx(0.55e-3)  # half way: the mean of the two ends
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))


def test_selection_on_identifier_loss_keeps_the_all_token_loss_and_unknown_selections_are_refused() -> None:
    import pytest

    from hypernet.refine import RefineConfig, refine_adapter
    from testkit.models import byte_tokenizer, tiny_llama
    from tests.hypernet.test_refine_rl import FILES, REPO_IDENTS, _start

    model, tok = tiny_llama(seed=3).requires_grad_(False), byte_tokenizer()
    start = _start(model)
    cfg = RefineConfig(steps=6, max_seconds=600, seq_len=32, batch=2, eval_every=2, patience=10, lr=2e-2,
                       select="ident")
    result = refine_adapter(model, tok, start, 2.0, FILES, REPO_IDENTS, cfg)
    first, best, hist = result.metrics["val_start"], result.metrics["val_best"], result.metrics["history"]
    # step 2 was better on identifiers but worse on all tokens: the guard refused it; step 4 was better on both
    assert hist[0]["step"] == 2 and hist[0]["ident_loss"] < first["ident_loss"] and hist[0]["loss"] > first["loss"]
    assert result.metrics["best_step"] == 4
    assert best["loss"] <= first["loss"] and best["ident_loss"] < first["ident_loss"]
    with pytest.raises(ValueError, match="unknown selection"):
        refine_adapter(model, tok, start, 2.0, FILES, REPO_IDENTS, RefineConfig(steps=1, select="loss"))


def test_the_kl_term_covers_identifier_tokens_only_when_asked() -> None:
    import torch.nn.functional as F

    from hypernet.refine import _objective

    gen = torch.Generator().manual_seed(0)
    start = torch.randn(1, 5, 11, generator=gen)
    ids = torch.randint(0, 11, (1, 6), generator=gen)
    ident = torch.tensor([[False, False, True, False, False, False]])  # target position 1 is an identifier
    moved = start.clone()
    moved[0, 1] += 5 * torch.randn(11, generator=gen)  # the adapter changed its prediction there only
    start_logp = F.log_softmax(start, dim=-1)
    _, off = _objective(moved, ids, ident, 3.0, start_logp, 1.0)
    _, on = _objective(moved, ids, ident, 3.0, start_logp, 1.0, kl_identifiers=True)
    assert off["kl"] == 0.0  # the identifier position is free to move
    assert on["kl"] > 0.05  # and anchored when asked
