import pytest
import torch

from hypernet.amplify import amplify, average_adapter, compress


def _adapter(seed: int, rank: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {m: (torch.randn(rank, 5, generator=g), torch.randn(4, rank, generator=g)) for m in ("m1", "m2")}


def _dw(ad: dict, m: str) -> torch.Tensor:
    a, b = ad[m]
    return b @ a


def test_average_adapter_is_the_mean_weight_update():
    ads = [_adapter(0), _adapter(1), _adapter(2)]
    avg = average_adapter(ads)
    for k in ("m1", "m2"):
        torch.testing.assert_close(_dw(avg, k), sum(_dw(ad, k) for ad in ads) / 3)
        assert avg[k][0].shape[0] == 6  # ranks stacked


def test_average_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        average_adapter([])


@pytest.mark.parametrize("alpha", [0.0, 2.0, 3.5, -1.0])
def test_amplify_is_ref_plus_alpha_times_the_difference(alpha):
    own, ref = _adapter(0), _adapter(1)
    out = amplify(own, ref, alpha)
    for k in ("m1", "m2"):
        torch.testing.assert_close(_dw(out, k), _dw(ref, k) + alpha * (_dw(own, k) - _dw(ref, k)))


def test_amplify_by_one_is_the_adapter_itself():
    own, ref = _adapter(0), _adapter(1)
    out = amplify(own, ref, 1.0)
    assert all(out[k][0] is own[k][0] and out[k][1] is own[k][1] for k in own)


def test_amplify_needs_the_same_modules():
    own = _adapter(0)
    with pytest.raises(ValueError):
        amplify(own, {"m1": own["m1"]}, 2.0)


def test_compress_keeps_a_low_rank_update_and_truncates_to_the_best_approximation():
    own, ref = _adapter(0), _adapter(1)
    stacked = amplify(own, ref, 2.0)  # rank 4, exact
    same = compress(stacked, 4)
    full = compress(stacked, 8)
    for k in ("m1", "m2"):
        torch.testing.assert_close(_dw(same, k), _dw(stacked, k), atol=1e-5, rtol=1e-4)
        assert full[k][0] is stacked[k][0]  # already within the rank: untouched
    low = compress(stacked, 1)
    for k in ("m1", "m2"):
        assert low[k][0].shape == (1, 5) and low[k][1].shape == (4, 1)
        s = torch.linalg.svdvals(_dw(stacked, k))
        err = torch.linalg.matrix_norm(_dw(low, k) - _dw(stacked, k))
        torch.testing.assert_close(err, s[1:].square().sum().sqrt(), atol=1e-4, rtol=1e-4)  # Eckart-Young
